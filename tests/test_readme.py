"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str) -> None:
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    if "y" in namespace:  # the core example ends with the step output of a warmed-up net
        assert namespace["y"] is not None
        assert namespace["y"].shape == (*namespace["logits"].shape[:2], 1, 1)
