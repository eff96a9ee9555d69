"""The README's Python examples run as written (the quick start trains for minutes: marked slow)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _param(i: int, code: str):
    trains = "experiments.run(" in code  # a real training run: minutes on 2 CPU cores
    return pytest.param(code, id=f"block{i}", marks=[pytest.mark.slow] if trains else [])


def test_readme_has_examples() -> None:
    assert BLOCKS
    assert any("experiments.run(" in code for code in BLOCKS)  # the Python quick start


@pytest.mark.parametrize("code", [_param(i, code) for i, code in enumerate(BLOCKS)])
def test_readme_example_runs(code: str) -> None:
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    if "y" in namespace:  # the core example ends with the step output of a warmed-up net
        assert namespace["y"] is not None
        assert namespace["y"].shape == (*namespace["logits"].shape[:2], 1, 1)
    if "test" in namespace:  # the quick start: both protocols measured something above chance (10 classes)
        assert namespace["fit"].metrics["test/top1"] > 0.2 and namespace["test"].metrics["test/top1"] > 0.15
