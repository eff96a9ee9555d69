"""Video nets (clips ``(B, C, T, H, W)``) and their continual twins: X3D / CoX3D, the 3D ResNets (Slow, I3D,
CoSlow, CoI3D, R(2+1)D-18) and the reference conv stack.

Each weights module imports the nets it converts; importing it here registers its checkpoint formats together with
the models, so ``modules.nets.load_pretrained`` knows them whenever ``build`` does.
"""

from . import (
    conv_stack,  # noqa: F401  (registers conv_stack, co_conv_stack)
    resnet3d,  # noqa: F401  (registers slow_8x8_r50, coslow_8x8_r50, i3d_8x8_r50, coi3d_8x8_r50, r2plus1d_18)
    resnet3d_weights,  # noqa: F401  (SlowFast, pytorchvideo and Caffe2 formats of the 3D ResNets)
    x3d,  # noqa: F401  (registers x3d_{xs,s,m,l,tiny}, cox3d_{xs,s,m,l,tiny})
    x3d_weights,  # noqa: F401  (SlowFast and pytorchvideo formats of X3D)
)
