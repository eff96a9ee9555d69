"""Channel pruning as in Hedegaard et al., arXiv 2211.10155: the channel graph of a net, masks and how they act,
criteria and the global selection, the prune schedule, LRP relevance, export to a dense smaller net, and
ΔParams/FLOPs counting. Torch only."""

from . import counting
from .counting import *  # noqa: F403  (ΔParams/FLOPs counting keeps its own __all__)
from .criteria import EXTREMELY_HIGH_VALUE, ChannelScorer, Criterion, normalise, select
from .export import count_parameters, export_keep, export_pruned
from .graph import ChannelGraph, GraphError, input_mask, is_prunable
from .lrp import LRPError, LRPResult, conv_relevance
from .masks import ChannelMasks, MaskHandle, apply_masks, strip_mask_hooks
from .schedule import PruneSchedule

__all__ = [
    "EXTREMELY_HIGH_VALUE",
    "ChannelGraph",
    "ChannelMasks",
    "ChannelScorer",
    "Criterion",
    "GraphError",
    "LRPError",
    "LRPResult",
    "MaskHandle",
    "PruneSchedule",
    "apply_masks",
    "conv_relevance",
    "count_parameters",
    "export_keep",
    "export_pruned",
    "input_mask",
    "is_prunable",
    "normalise",
    "select",
    "strip_mask_hooks",
    *counting.__all__,
]
