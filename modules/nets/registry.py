"""A timm-style model registry: ``@register_model("name")`` on keyword-only builders, ``build(name, **kw)``.

Configs name architectures through ``build`` (``_target_: modules.nets.build``, ``name: conv_stack``), so a
config never depends on the module path of a builder, and every registered model can be tested in one loop.

Each model also registers what it expects of its input (``InputSpec``, like timm's ``default_cfgs``): clip
length, sampling stride, crop and normalisation. ``input_spec(name)`` reads it; the profiler's default data
config (``configs/data/model_input.yaml``) takes the input shape from it. A continual twin shares its offline
net's facts; the clip length it needs for stepwise evaluation follows from the built net (``net.delay``,
``modules.systems.required_clip_length``), so it is not stored here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from ..continual.base import ordinary_tensors
from ..continual.fold import fold_batchnorm

__all__ = ["InputSpec", "build", "builder_defaults", "get_builder", "input_spec", "list_models", "register_model"]


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: ``clip_length`` frames taken every ``sampling_stride`` frames of a 30 fps video,
    ``channels`` x ``crop_size`` x ``crop_size`` pixels normalised with ``normalisation``.

    Image models have no time axis: ``clip_length`` and ``sampling_stride`` are ``None``. ``normalisation`` names
    an entry of ``datamodules.video.NORMALISATIONS`` (video models) or ``datamodules.images.NORMALISATIONS``
    (image models); ``None`` means the statistics of the dataset itself (no fixed convention).

    Skeleton models take clips ``(N, channels, clip_length, joints, persons)`` and set ``joints`` and ``persons``;
    their ``crop_size`` is the spatial size of a frame, i.e. ``joints`` (it must equal it).

    Feature models (``features=True``: the online action detection transformers) take pre-extracted features
    ``(N, channels, clip_length)``: ``channels`` is the feature width (``dim_feature``), ``clip_length`` the window
    of steps (``sequence_len``); a step has no spatial size (``crop_size=1``) and no pixel normalisation.
    """

    crop_size: int
    clip_length: int | None
    sampling_stride: int | None = None
    normalisation: str | None = None
    channels: int = 3
    joints: int | None = None
    persons: int | None = None
    features: bool = False

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.channels < 1:
            raise ValueError(f"crop_size and channels must be positive, got {self.crop_size} and {self.channels}")
        if (self.clip_length is None) != (self.sampling_stride is None):
            raise ValueError(
                "clip_length and sampling_stride are both set (a video model) or both None (an image model); "
                f"got clip_length={self.clip_length}, sampling_stride={self.sampling_stride}"
            )
        if self.clip_length is not None and (self.clip_length < 1 or self.sampling_stride < 1):
            raise ValueError(
                f"clip_length and sampling_stride must be >= 1, got {self.clip_length} and {self.sampling_stride}"
            )
        if (self.joints is None) != (self.persons is None):
            raise ValueError(
                "joints and persons are both set (a skeleton model) or both None; "
                f"got joints={self.joints}, persons={self.persons}"
            )
        if self.joints is not None:
            if self.clip_length is None or self.joints < 1 or self.persons < 1:
                raise ValueError(
                    "a skeleton model needs a clip_length and positive joints and persons; got "
                    f"clip_length={self.clip_length}, joints={self.joints}, persons={self.persons}"
                )
            if self.crop_size != self.joints:
                raise ValueError(f"a skeleton frame is its joints: set crop_size={self.joints} (= joints)")
        if self.features and (self.clip_length is None or self.joints is not None or self.crop_size != 1):
            raise ValueError(
                "a feature model takes (N, dim_feature, clip_length) windows: set clip_length, crop_size=1 and no "
                f"joints; got clip_length={self.clip_length}, crop_size={self.crop_size}, joints={self.joints}"
            )

    @property
    def is_skeleton(self) -> bool:
        """Whether inputs are skeleton clips ``(N, C, T, V, M)`` rather than videos or images."""
        return self.joints is not None

    @property
    def is_features(self) -> bool:
        """Whether inputs are feature windows ``(N, dim_feature, T)`` (no spatial dims)."""
        return self.features


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SPECS: dict[str, InputSpec] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str, *, input_spec: InputSpec | None = None) -> Callable[[F], F]:
    """Register a builder under ``name`` with the ``input_spec`` its model expects. Builders take keyword-only
    arguments, so configs stay explicit."""

    def decorator(fn: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        positional = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if positional:
            raise TypeError(
                f"builder {fn.__qualname__} for {name!r} takes positional arguments {positional}; "
                "make them keyword-only (put `*,` first)"
            )
        _REGISTRY[name] = fn
        if input_spec is not None:
            _INPUT_SPECS[name] = input_spec
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; an unknown name raises ``KeyError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models()) or '(none)'}") from None


def input_spec(name: str) -> InputSpec:
    """The input facts registered with ``name``; a model registered without them raises ``KeyError``."""
    get_builder(name)  # an unknown name lists the known ones
    try:
        return _INPUT_SPECS[name]
    except KeyError:
        raise KeyError(
            f"model {name!r} was registered without input facts; pass register_model({name!r}, input_spec=...)"
        ) from None


def builder_defaults(name: str) -> dict[str, Any]:
    """The default of every argument of ``name``'s builder that has one, e.g. ``num_classes``."""
    parameters = inspect.signature(get_builder(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def build(
    name: str,
    *,
    weights: str | None = None,
    weights_skip_head: bool = False,
    weights_strict: bool = False,
    inference: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the registered model ``name`` with its defaults replaced by ``overrides``; ``weights`` is an official
    checkpoint (``.pyth``/``.pth``/``.pkl``) loaded with ``modules.nets.load_pretrained``: ``weights_skip_head``
    leaves the classifier out (fine-tuning on another class count), ``weights_strict`` fails on missing keys.

    ``inference=True`` returns the net ready to run, not to train: eval mode, eval BatchNorm folded into the
    convs before it (``modules.continual.fold_batchnorm``: other state-dict keys, so load weights through
    ``weights`` or before folding) and no parameter requiring grad. Step a continual one through
    ``modules.continual.fast_step`` for the compiled steady state."""
    fn = get_builder(name)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise TypeError(f"model {name!r} has no argument(s) {unknown}; it accepts {sorted(params)}")
    # a net built under torch.inference_mode holds inference tensors, which grad-mode steps and later loads refuse
    net = ordinary_tensors(fn(**overrides))
    if weights:
        from .weights import load_pretrained  # the registry stays importable without the converters

        load_pretrained(net, weights, skip_head=weights_skip_head, strict=weights_strict)
    return for_inference(net) if inference else net


def for_inference(net: nn.Module) -> nn.Module:
    """``net`` in place: eval mode, BatchNorm folded into the preceding convs, parameters without grad."""
    net = fold_batchnorm(net.eval(), inplace=True)
    return net.requires_grad_(False)
