"""paper/migrating-from-continual-inference.md: every row of its tables names tests that exist."""

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "paper" / "migrating-from-continual-inference.md"
HEADER = "| library call | our call | difference | test that backs it |"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)(?:\[[^\]]*\])?`")


def _rows() -> list[list[str]]:
    """The body rows of the guide's tables, as cells; checks that every table has the four columns."""
    rows, in_table = [], False
    for line in GUIDE.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table:
            assert line == HEADER, f"a table of {GUIDE.name} has the header {line!r}, expected {HEADER!r}"
            in_table = True
            continue
        if set(line) <= {"|", "-", " "}:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"row with {len(cells)} cells instead of 4: {line}"
        rows.append(cells)
    return rows


@cache
def _defined(path: str) -> set[str]:
    """``name`` and ``Class::name`` of the test functions defined in a test file."""
    tree = ast.parse((ROOT / path).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body if isinstance(item, ast.FunctionDef))
    return names


def test_every_row_names_tests_that_exist() -> None:
    rows = _rows()
    assert len(rows) >= 40
    missing = []
    for cells in rows:
        ids = NODE_ID.findall(cells[3])
        assert ids, f"the row for {cells[0]} names no test (write `tests/<file>.py::<test>`)"
        for path, name in ids:
            if not (ROOT / path).is_file() or name not in _defined(path):
                missing.append(f"{path}::{name}")
    assert not missing, f"{GUIDE.name} names tests that do not exist: {missing}"


def test_every_library_defect_has_its_row() -> None:
    named = {name for cells in _rows() for path, name in NODE_ID.findall(cells[3])}
    defects = _defined("tests/continual/test_reference_defects.py")
    assert defects and defects <= named, f"defect tests without a row: {sorted(defects - named)}"


@pytest.mark.parametrize(
    "topic",
    [
        "import continual as co",
        "call_mode",
        "forward_stepping",
        "get_state()",
        "co.continual(",
        "flatten=True",
        "embed_dim_second",
        "channel_dim",
        "temporal_window",
        "residual_shrink",
        "co.export",
        "ptflops",
        "co.RNN/GRU/LSTM",
        "co.Lambda(",
    ],
)
def test_the_guide_covers(topic: str) -> None:
    assert any(topic in cells[0] or topic in cells[1] for cells in _rows()), f"no row for {topic!r}"
