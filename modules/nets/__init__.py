"""Architectures as plain ``nn.Module``s, each offline net beside its continual twin, behind a registry.

Importing this package registers every model: add the import of a new architecture module here.
"""

from . import (
    conv_stack,  # noqa: F401  (registers conv_stack, co_conv_stack)
    image_nets,  # noqa: F401  (registers vgg16, vit_b16)
    resnet2d,  # noqa: F401  (registers resnet18/50[_cifar], resnet_tiny)
    resnet3d,  # noqa: F401
    x3d,  # noqa: F401
)
from .registry import InputSpec, build, builder_defaults, get_builder, input_spec, list_models, register_model
from .weights import LoadReport, load_pretrained, register_converter, unwrap_state_dict

__all__ = [
    "InputSpec",
    "LoadReport",
    "build",
    "builder_defaults",
    "get_builder",
    "input_spec",
    "list_models",
    "load_pretrained",
    "register_converter",
    "register_model",
    "unwrap_state_dict",
]
