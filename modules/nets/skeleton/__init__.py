"""Skeleton nets (clips ``(N, C, T, V, M)``) and their continual twins (Hedegaard, Heidari & Iosifidis,
"Continual Spatio-Temporal Graph Convolutional Networks", Pattern Recognition 2023, arXiv 2203.11009):

* ``st_gcn``, ``agcn``, ``s_tr``: ST-GCN, AGCN, S-TR; ``*_mod``: the * variants (stride 1, no temporal padding).
* ``cost_gcn``, ``coagcn``, ``cos_tr`` (a prediction every 4 frames) and ``*_mod`` (every frame): the twins.

``graphs`` (NTU-25, Kinetics OpenPose-18, spatial-configuration partitions), ``gcn`` (the spatial units),
``blocks`` (the spatio-temporal block and its twin), ``nets`` (the shared backbone); ``weights`` reads the
continual-skeletons checkpoints, so ``modules.nets.load_pretrained`` knows them whenever ``build`` does.
"""

from . import (
    agcn,  # noqa: F401  (registers agcn, agcn_mod, coagcn, coagcn_mod)
    s_tr,  # noqa: F401  (registers s_tr, s_tr_mod, cos_tr, cos_tr_mod)
    st_gcn,  # noqa: F401  (registers st_gcn, st_gcn_mod, cost_gcn, cost_gcn_mod)
    weights,  # noqa: F401  (continual-skeletons .pt / .ckpt formats)
)
from .nets import CoSkeletonNet, SkeletonNet

__all__ = ["CoSkeletonNet", "SkeletonNet"]
