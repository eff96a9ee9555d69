"""Architectures as plain ``nn.Module``s by family, each offline net beside its continual twin, behind a registry.

* ``video``: X3D / CoX3D, the 3D ResNets (Slow, I3D and their twins CoSlow, CoI3D; R(2+1)D-18), the reference
  conv stack, and the converters of their official checkpoints.
* ``image``: the 2-D ResNets, VGG-16 and ViT-B/16 of the SPA study.
* ``skeleton``: ST-GCN, AGCN, S-TR, their * variants and continual twins (CoST-GCN, CoAGCN, CoS-TR), the
  skeleton graphs and the converters of the continual-skeletons checkpoints.
* ``transformer``: OadTR, OadTR-b1/b2 and CoOadTR-b1/b2 on pre-extracted features, and the converter of the
  original OadTR / CoOadTR checkpoints.

Importing this package registers every model and checkpoint format: a new family's package is imported here, a
new architecture module in its family's ``__init__``. Imports run one way: a family imports ``registry`` and
``weights``, a weights module imports its nets, and nothing here imports a family but this file.
"""

from . import (
    image,  # noqa: F401  (registers resnet18/50[_cifar], resnet_tiny, vgg16, vit_b16)
    skeleton,  # noqa: F401  (registers st_gcn, agcn, s_tr, cost_gcn, coagcn, cos_tr and their *_mod variants)
    transformer,  # noqa: F401  (registers oadtr, oadtr_b1/b2, cooadtr_b1/b2)
    video,  # noqa: F401  (registers x3d_*, cox3d_*, slow/i3d and twins, r2plus1d_18, conv_stack, co_conv_stack)
)
from .registry import (
    InputSpec,
    build,
    builder_defaults,
    for_inference,
    get_builder,
    input_spec,
    list_models,
    register_model,
)
from .weights import LoadReport, load_pretrained, register_converter, unwrap_state_dict

__all__ = [
    "InputSpec",
    "LoadReport",
    "build",
    "builder_defaults",
    "for_inference",
    "get_builder",
    "input_spec",
    "list_models",
    "load_pretrained",
    "register_converter",
    "register_model",
    "unwrap_state_dict",
]
