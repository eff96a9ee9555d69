"""The input facts of the feature nets: what the registry, the profiler and the configs read."""

from __future__ import annotations

import pytest

from experiments.inputs import clip_input_shape, model_input
from modules.nets import InputSpec, input_spec

NAMES = ("oadtr", "oadtr_b1", "oadtr_b2", "cooadtr_b1", "cooadtr_b2")


@pytest.mark.parametrize("name", NAMES)
def test_feature_windows_of_3072_d_and_64_steps(name: str) -> None:
    spec = input_spec(name)
    assert spec.is_features and not spec.is_skeleton
    assert clip_input_shape(name) == (3072, 64)
    assert model_input(name, "dim_feature") == 3072 and model_input(name, "sequence_len") == 64
    assert model_input(name, "num_classes") == 22


def test_feature_facts_are_refused_for_pixel_models_and_half_specs() -> None:
    with pytest.raises(KeyError, match="feature models"):
        model_input("x3d_s", "dim_feature")
    with pytest.raises(ValueError, match="crop_size=1"):
        InputSpec(crop_size=8, clip_length=64, sampling_stride=1, channels=3072, features=True)
    with pytest.raises(ValueError, match="clip_length"):
        InputSpec(crop_size=1, clip_length=None, channels=3072, features=True)
