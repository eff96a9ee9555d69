"""Online action detection transformers on pre-extracted features (clips ``(B, dim_feature, T)``):

* ``oadtr``, ``oadtr_b1``, ``oadtr_b2``: OadTR (Wang et al., ICCV 2021) and its decoder-free baselines (offline
  windows, ``oadtr.py``);
* ``cooadtr_b1``, ``cooadtr_b2``: CoOadTR (Hedegaard, Bakhtiarnia & Iosifidis, ICLR 2023, arXiv 2201.06268), the
  continual nets that predict at every step (``cooadtr.py``).

``blocks`` holds the shared pieces (feature input facts, OadTR's pre-norm encoder, window stacking); ``weights``
reads the original OadTR / CoOadTR checkpoints, so ``modules.nets.load_pretrained`` knows them whenever ``build``
does.
"""

from . import (
    cooadtr,  # noqa: F401  (registers cooadtr_b1, cooadtr_b2)
    nystrom,  # noqa: F401 (registers nystromformer_b1/b2, conystromformer_b1/b2)
    oadtr,  # noqa: F401  (registers oadtr, oadtr_b1, oadtr_b2)
    weights,  # noqa: F401  (original OadTR / CoOadTR checkpoints)
)
from .cooadtr import CoOadTR
from .oadtr import OadTR

__all__ = ["CoOadTR", "OadTR"]
