"""What the entry points derive from the model before any work starts: its input facts and the evaluation clips.

* ``${model_input:<registry name>,<field>}`` (an OmegaConf resolver, registered when ``experiments`` is imported)
  is a field of the model's registered ``InputSpec`` (``clip_length``, ``sampling_stride``, ``crop_size``,
  ``normalisation``, ``channels``) or its builder's default ``num_classes``. ``configs/data/model_input.yaml``, the
  profiler's default data, reads the input shape of ``${model.net.name}`` with it.
* ``eval_clips(cfg, model)`` is the val/test clip length of the configured protocol: derived from the built net
  when ``eval.clip_length`` is null, else the explicit value, which must be long enough.
* ``instantiate_datamodule(cfg, model)`` builds ``cfg.data`` with that length and says up front when the videos
  hold fewer distinct frames than the clips need.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # importing the package registers the resolver; torch and the nets load on first use
    from modules.systems import ClipLengthNeed

__all__ = [
    "check_video_length",
    "clip_input_shape",
    "eval_clips",
    "instantiate_datamodule",
    "model_input",
    "register_resolvers",
]

log = logging.getLogger(__name__)


#: the names feature models (``InputSpec.features``) give their input facts: the builders' argument names
_FEATURE_FIELDS = {"dim_feature": "channels", "sequence_len": "clip_length"}


def model_input(name: str, field: str) -> Any:
    """A field of ``name``'s registered ``InputSpec``, or ``num_classes``: its builder's default. Feature models
    also answer ``dim_feature`` (``channels``) and ``sequence_len`` (``clip_length``)."""
    from modules.nets import InputSpec, builder_defaults, input_spec  # the nets load only when a config asks

    if field == "num_classes":
        defaults = builder_defaults(name)
        if "num_classes" not in defaults:
            raise KeyError(f"the builder of {name!r} has no num_classes default; set data.num_classes")
        return defaults["num_classes"]
    spec = input_spec(name)
    if field in _FEATURE_FIELDS:
        if not spec.is_features:
            raise KeyError(f"model_input: {field!r} is a fact of feature models; {name!r} takes clips of pixels")
        field = _FEATURE_FIELDS[field]
    known = [f.name for f in fields(InputSpec)]
    if field not in known:
        raise KeyError(f"model_input: {field!r} is not an input fact; use one of {[*known, 'num_classes']}")
    return getattr(spec, field)


def clip_input_shape(name: str) -> tuple[int, ...]:
    """``(C, T, H, W)`` (a skeleton model: ``(C, T, V, M)``; a feature model: ``(dim_feature, sequence_len)``) of
    one clip of ``name``'s registered input, without the batch dimension."""
    from modules.nets import input_spec

    spec = input_spec(name)
    if spec.clip_length is None:
        raise ValueError(f"{name!r} is an image model: it takes no clips; give the pair an explicit input_shape")
    if spec.is_skeleton:
        return (spec.channels, spec.clip_length, spec.joints, spec.persons)
    if spec.is_features:
        return (spec.channels, spec.clip_length)
    return (spec.channels, spec.clip_length, spec.crop_size, spec.crop_size)


def register_resolvers() -> None:
    """Register ``model_input``, the skeleton configs' resolvers (``experiments.skeleton_resolvers``) and the
    online detection configs' (``experiments.transformer_resolvers``); idempotent: the entry points and tests
    import this more than once."""
    from experiments import skeleton_resolvers, transformer_resolvers  # skeleton_data, scaled_lr; oad_feature_dim

    if not OmegaConf.has_resolver("model_input"):
        OmegaConf.register_new_resolver("model_input", model_input)
    skeleton_resolvers.register()
    transformer_resolvers.register()


def eval_clips(cfg: DictConfig, model: Any) -> ClipLengthNeed | None:
    """The val/test clips of ``cfg.eval.protocol`` with ``model``: ``frames`` is the length chosen, ``reason`` what
    the protocol needs. ``eval.clip_length`` null derives the length; an explicit one shorter than needed is an
    error naming the length. None for a model that cannot tell (not a ``ClassificationSystem``)."""
    from modules.systems import ClipLengthNeed

    explicit = cfg.eval.get("clip_length")
    # no data.clip_length: the data gives whole sequences (skeletons: 300 frames) that no protocol resizes
    if not hasattr(model, "eval_clip_length") or "clip_length" not in cfg.data:
        return None if explicit is None else ClipLengthNeed(int(explicit), "eval.clip_length")
    need = model.eval_clip_length(int(cfg.data.clip_length), transient_frames=cfg.eval.get("transient_frames"))
    if explicit is None:
        log.info(f"Evaluation clips of {need.frames} frames, derived: {need.reason}")
        return need
    if explicit < need.frames:
        raise ValueError(
            f"eval.clip_length={explicit} is too short for the {cfg.eval.protocol} protocol, which needs "
            f"{need.frames} frames ({need.reason}); set eval.clip_length={need.frames} (or more), or "
            "eval.clip_length=null to derive it"
        )
    log.info(f"Evaluation clips of {explicit} frames, set by eval.clip_length; {need.reason}")
    return need._replace(frames=int(explicit))


def instantiate_datamodule(cfg: DictConfig, model: Any) -> Any:
    """``cfg.data`` with the evaluation clip length of ``eval_clips``; it is written back into ``eval.clip_length``
    so that the saved config records it. Warns (or fails, see ``check_video_length``) when the videos are short."""
    clips = eval_clips(cfg, model)
    if clips is None or "eval_clip_length" not in cfg.data:
        return hydra.utils.instantiate(cfg.data)
    cfg.eval.clip_length = clips.frames
    datamodule = hydra.utils.instantiate(cfg.data, eval_clip_length=clips.frames)
    check_video_length(datamodule, clips, cfg.eval.protocol)
    return datamodule


def check_video_length(datamodule: Any, clips: ClipLengthNeed, protocol: str) -> None:
    """Warn when ``clips.frames`` exceeds the distinct frames a clip can take from the videos
    (``datamodule.max_clip_frames()``; the loader repeats the last frame); raise when the videos hold fewer than
    ``clips.min_video_frames``, below which the protocol's result means nothing."""
    available = datamodule.max_clip_frames() if hasattr(datamodule, "max_clip_frames") else None
    if available is None or clips.frames <= available:
        return
    stride = datamodule.hparams.get("sampling_stride")
    videos = f"the videos of {type(datamodule).__name__} hold about {available} distinct frames at stride {stride}"
    if clips.min_video_frames is not None and available < clips.min_video_frames:
        raise ValueError(
            f"The {protocol} protocol counts real frames from its first output at frame {clips.min_video_frames}, "
            f"but {videos}: every point would see repeated frames. Lower data.sampling_stride or use longer videos."
        )
    log.warning(
        f"The {protocol} protocol needs {clips.frames}-frame clips but {videos}; the loader repeats the last frame "
        f"for the other {clips.frames - available} (datamodules/README.md, Clips)."
    )
