"""The Makefile: one recipe per target, a help line for each, and every `make X` in the READMEs exists."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

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


# --- the READMEs' shell commands, as printed ------------------------------------------------------------------

READMES = sorted([REPO / "README.md", *REPO.glob("*/README.md")])
RUNNERS = ("make ", ".venv/bin/python ", "python ", "python3 ", "source ", "wandb ")


def _shell_lines(text: str) -> list[str]:
    """Commands in ```bash blocks (comments dropped) and inline code spans that start like a command."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        pending = ""  # a command spans lines while a quote is open or a line ends with a backslash
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line.split("  # ")[0].strip()
            try:
                shlex.split(pending)
            except ValueError:
                continue
            if not pending.endswith("\\"):
                lines.append(pending)
                pending = ""
    lines += re.findall(r"`((?:make|\.venv/bin/python|python3?) [^`\n]+)`", text)
    return [line for line in lines if line and not line.startswith("#")]


README_COMMANDS = sorted({(r.relative_to(REPO).as_posix(), c) for r in READMES for c in _shell_lines(r.read_text())})


def _placeholders_filled(args: list[str]) -> list[str]:
    """``<ckpt>`` style placeholders and shell variables get a dummy value; sweeps keep their first value."""
    filled = []
    for arg in args:
        arg = re.sub(r"<[^>]+>", "placeholder", arg)
        arg = re.sub(r"\$\{?\w+\}?", "1", arg)
        key, eq, value = arg.partition("=")
        if eq and "," in value and not value.startswith("["):
            value = value.split(",")[0]  # a multirun sweep composes like its first job
        filled.append(f"{key}{eq}{value}")
    return filled


def _compose_entry_point(module: str, args: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import experiments  # noqa: F401  (registers the config resolvers)

    overrides = [a for a in _placeholders_filled(args) if not a.startswith("-")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            compose(config_name=module, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _python_invocations(command: str) -> list[tuple[str, list[str]]]:
    """``(entry point, overrides)`` of each ``python -m experiments.<name>`` in a shell command."""
    found = []
    for line in command.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace(";", " ; ").replace("&", " & "), posix=True)
        for i, word in enumerate(words[:-2]):
            if word.endswith("python") and words[i + 1] == "-m" and words[i + 2].startswith("experiments."):
                rest = words[i + 3 :]
                end = next((j for j, w in enumerate(rest) if w in (";", "&", "&&", "|")), len(rest))
                found.append((words[i + 2].removeprefix("experiments."), rest[:end]))
    return found


def test_readmes_show_commands():
    assert len(README_COMMANDS) > 20


@pytest.mark.parametrize("where,command", README_COMMANDS, ids=[c for _, c in README_COMMANDS])
def test_readme_command_runs_as_printed(where, command):
    """Python lines use the project's environment; make lines name real targets and variables; every Hydra
    override they pass composes with the entry point's config (placeholders like <ckpt> filled in)."""
    assert not command.startswith(("python ", "python3 ")), (
        f"{where}: `{command}` needs the project's environment: write `.venv/bin/python ...` or a make target"
    )
    words = shlex.split(re.sub(r"<[^>]+>", "placeholder", command))
    if words[0] == "make":
        targets = [w for w in words[1:] if "=" not in w]
        assignments = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        assert set(targets) <= set(TARGETS), f"{where}: unknown make target(s) {set(targets) - set(TARGETS)}"
        unknown = [v for v in assignments if not re.search(rf"\$\({v}\)|^{v}\s*[?:]?=", MAKEFILE, flags=re.M)]
        assert not unknown, f"{where}: `{command}` sets {unknown}, which the Makefile never reads"
        dry = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        invocations = _python_invocations(dry.stdout)
    elif words[0] == ".venv/bin/python" and words[1:2] == ["-m"]:
        assert (REPO / f"{words[2].replace('.', '/')}.py").is_file(), f"{where}: no module {words[2]}"
        invocations = _python_invocations(command)
    elif words[0] == ".venv/bin/python" and words[1].endswith(".py"):
        assert (REPO / words[1]).is_file(), f"{where}: {words[1]} does not exist"
        invocations = []
    else:
        invocations = []
    for module, args in invocations:
        if (REPO / "configs" / f"{module}.yaml").is_file():
            _compose_entry_point(module, args)
