"""Continual inference: modules that run on a whole clip or one time step at a time, with the same weights.

See ``base.py`` for the step protocol. Imports torch only.
"""

from .attention import RetroactiveMultiheadAttention, SingleOutputMultiheadAttention
from .base import (
    CoModule,
    StatefulModule,
    call_mode,
    ordinary_tensors,
    out_of_place,
    set_temporal_fill,
    set_temporal_window,
    state_slots,
)
from .closure import Add, Constant, Identity, Multiply, One, ParallelDispatch, Reshape, Zero
from .container import (
    Broadcast,
    BroadcastReduce,
    Conditional,
    ContainerModule,
    Lambda,
    Parallel,
    Reduce,
    Residual,
    Sequential,
)
from .conv import Conv1d, Conv2d, Conv3d, set_depthwise_step
from .convert import UnsupportedModuleError, continual, register
from .delay import Delay, Skip
from .export import ExportedStep, ExportError, OnnxStepRunner, TorchExportRunner, export
from .fast import EagerStep, fast_step
from .fold import fold_batchnorm
from .linear import Linear
from .local import StepLocal, forward_stepping, local
from .nystrom import ContinualNystromAttention, NystromAttention, NystromTransformerEncoderLayer  # noqa: F401
from .pooling import (
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from .positional import RecyclingPositionalEncoding
from .replay import CompiledStep, CudaGraphCall, CudaGraphStep
from .rnn import GRU, LSTM, RNN
from .transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "Add",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "Broadcast",
    "BroadcastReduce",
    "CoModule",
    "CompiledStep",
    "Conditional",
    "Constant",
    "ContainerModule",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "CudaGraphCall",
    "CudaGraphStep",
    "Delay",
    "EagerStep",
    "ExportError",
    "ExportedStep",
    "Identity",
    "Lambda",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Multiply",
    "One",
    "OnnxStepRunner",
    "Parallel",
    "ParallelDispatch",
    "RecyclingPositionalEncoding",
    "Reduce",
    "Reshape",
    "Residual",
    "RetroactiveMultiheadAttention",
    "Sequential",
    "SingleOutputMultiheadAttention",
    "Skip",
    "StatefulModule",
    "StepLocal",
    "TorchExportRunner",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "UnsupportedModuleError",
    "Zero",
    "call_mode",
    "continual",
    "export",
    "fast_step",
    "fold_batchnorm",
    "forward_stepping",
    "local",
    "ordinary_tensors",
    "out_of_place",
    "register",
    "set_depthwise_step",
    "set_temporal_fill",
    "set_temporal_window",
    "state_slots",
]
