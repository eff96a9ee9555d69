"""Image classifiers of the SPA study: 2-D ResNets (with their torchvision checkpoint format), VGG-16, ViT-B/16."""

from . import (
    resnet2d,  # noqa: F401  (registers resnet18/50[_cifar], resnet_tiny and the torchvision-resnet format)
    torchvision_nets,  # noqa: F401  (registers vgg16, vit_b16)
)
