"""The Makefile: one recipe per target, a help line for each, and every `make X` in the READMEs exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = (REPO / "Makefile").read_text()
TARGETS = re.findall(r"^([a-zA-Z0-9_-]+):(?!=)", MAKEFILE, flags=re.M)


def test_each_target_is_defined_once_with_a_help_line():
    assert len(TARGETS) == len(set(TARGETS)), sorted(t for t in TARGETS if TARGETS.count(t) > 1)
    documented = set(re.findall(r"^([a-zA-Z0-9_-]+):.*## ", MAKEFILE, flags=re.M))
    assert set(TARGETS) - {"$(VENV)/.installed"} <= documented | {"install"}


def test_readme_commands_are_make_targets():
    mentioned = set()
    for readme in (REPO / "README.md", REPO / "datamodules" / "README.md"):
        mentioned |= set(re.findall(r"`make ([a-z0-9-]+)", readme.read_text()))
    assert mentioned and mentioned <= set(TARGETS), mentioned - set(TARGETS)
