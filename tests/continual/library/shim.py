"""continual-inference's names (``import continual as co``) for this core's objects: renames only.

Used by the tests adapted from the continual-inference library (Lukas Hedegaard, Apache-2.0). Every name here is
one of this core's objects under the library's name, or a namespace that groups them as the library's submodules
do; keyword renames are listed where they occur.
"""

from types import SimpleNamespace

from modules.continual import *  # noqa: F403
from modules.continual import Reduce
from modules.continual import local as forward_stepping  # noqa: F401
from modules.continual.flatten import flat_state_dict
from modules.continual.flatten import load_state_dict as _load_state_dict
from modules.continual.flatten import state_dict as _state_dict

# co.container.reduce_sum / reduce_concat: the reductions behind Reduce("sum") / Reduce("concat").
container = SimpleNamespace(reduce_sum=Reduce("sum"), reduce_concat=Reduce("concat"))
# co.utils.flat_state_dict, co.utils.state_dict, co.utils.load_state_dict.
utils = SimpleNamespace(flat_state_dict=flat_state_dict, state_dict=_state_dict, load_state_dict=_load_state_dict)


def _window_renamed(name: str) -> object:
    """An adaptive pool whose temporal window is called ``kernel_size``, as in the library (ours: temporal_window)."""
    import modules.continual as core

    cls = getattr(core, name)

    def build(output_size: object, kernel_size: int | None = None, **kwargs: object) -> object:
        return cls(output_size, temporal_window=kernel_size, **kwargs)

    def build_from(module: object, kernel_size: int | None = None, **kwargs: object) -> object:
        return cls.build_from(module, temporal_window=kernel_size, **kwargs)

    build.build_from = build_from  # type: ignore[attr-defined]
    return build


AdaptiveAvgPool2d = _window_renamed("AdaptiveAvgPool2d")
AdaptiveAvgPool3d = _window_renamed("AdaptiveAvgPool3d")
AdaptiveMaxPool2d = _window_renamed("AdaptiveMaxPool2d")
AdaptiveMaxPool3d = _window_renamed("AdaptiveMaxPool3d")


# --- layouts: the library's attention takes (L, N, E) sequences (batch_first=False) or (N, L, E) ones; this core's
# takes channels-first clips (N, E, L) and steps (N, E). These transposes are the whole translation.
def clip_from_sequence(x: object, batch_first: bool = False) -> object:
    """A library sequence (L, N, E), or (N, L, E) with ``batch_first``, as this core's clip (N, E, L)."""
    return x.permute(0, 2, 1) if batch_first else x.permute(1, 2, 0)  # type: ignore[attr-defined]


def sequence_from_clip(x: object, batch_first: bool = False) -> object:
    """This core's clip (N, E, L) as the library's sequence (L, N, E), or (N, L, E) with ``batch_first``."""
    return x.permute(0, 2, 1) if batch_first else x.permute(2, 0, 1)  # type: ignore[attr-defined]
