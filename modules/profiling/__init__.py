"""Model profiling: parameters, FLOPs per prediction, peak memory and throughput. Torch only; knows no architecture.

* ``macs``: multiply-accumulates a call executes (``count_macs``), from the aten ops it dispatches.
* ``conventions``: FLOPs as the papers' counters reported them (``"ptflops"``, ``"co3d_published"``) beside the
  executed MACs (``count_flops``, ``FlopCounter``); nets register their convention-specific modules
  (``register_pool_like``).
* ``memory``: peak memory of one call.
* ``timing``: warm-up, per-call timing (alone or interleaved), rates with their spread, busy-machine detection;
  shared by ``profile_model``, ``experiments.bench`` and the SPA study.
* ``profile``: ``profile_model`` puts them together for a net in clip or frame (continual step) mode.
"""

from .conventions import CONVENTIONS, FlopCounter, count_flops, ptflops_term, register_pool_like
from .counters import FvcoreStep, fvcore_handles, fvcore_step_analysis, ptflops_custom_hooks, visible_steps
from .macs import MacCounter, count_macs
from .memory import peak_live_bytes, peak_memory
from .profile import count_params, profile_model
from .timing import throughput_stats, time_calls, time_interleaved, warm_up

__all__ = [
    "CONVENTIONS",
    "FlopCounter",
    "FvcoreStep",
    "MacCounter",
    "count_flops",
    "count_macs",
    "count_params",
    "fvcore_handles",
    "fvcore_step_analysis",
    "peak_live_bytes",
    "peak_memory",
    "profile_model",
    "ptflops_custom_hooks",
    "ptflops_term",
    "register_pool_like",
    "throughput_stats",
    "time_calls",
    "time_interleaved",
    "visible_steps",
    "warm_up",
]
