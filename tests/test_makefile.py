"""The Makefile: one recipe per target, a help line for each, every `make X` in the READMEs exists, and the offline
runs on a GPU machine without a package registry (`make wheels`, `WHEELS=<dir>`, `make gpu-check`)."""

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
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


# --- offline runs on a GPU machine without a package registry: make wheels, WHEELS=<dir>, gpu-check ---------------

#: what an outer `make test ... WHEELS=...` or a GPU machine's $OUT would pass down to the make runs below
MAKE_ENV_KEYS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "WHEELS", "PYTHON", "OUT", "GPU_OUT", "ARGS")


def _make(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_KEYS}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_mode_installs_the_wheels_into_site_with_the_given_python_and_no_venv():
    dry = _make("-n", "-B", "test-gpu", "WHEELS=wh", "PYTHON=py3")
    assert dry.returncode == 0, dry.stderr
    assert "py3 -m pip install --quiet --no-index --no-deps --no-compile --target .site wh/*.whl" in dry.stdout
    assert "find_spec('torch')" in dry.stdout  # PYTHON is checked for torch before anything runs with it
    assert f"PYTHONPATH={REPO}/.site:{REPO} py3 -m pytest -m gpu -q" in dry.stdout
    assert "venv" not in dry.stdout.replace("leave WHEELS out to build .venv", "")
    normal = _make("-n", "test-gpu")
    assert normal.returncode == 0, normal.stderr
    assert ".venv/bin/python -m pytest -m gpu -q" in normal.stdout and ".site" not in normal.stdout


def test_offline_mode_refuses_a_python_without_torch_and_names_the_fix(tmp_path):
    (tmp_path / "wh").mkdir()
    run = _make("-f", str(REPO / "Makefile"), "install", "WHEELS=wh", f"PYTHON={sys.executable} -S", cwd=tmp_path)
    assert run.returncode != 0
    assert "which has no torch" in run.stderr and "PYTHON=python3" in run.stderr
    assert not (tmp_path / ".site").exists()


def _gpu_check(tmp_path: Path, fail_on: str, *extra: str) -> subprocess.CompletedProcess:
    """``make gpu-check`` for real in a copy of the Makefile, offline mode, with a stand-in for the Python that
    prints its arguments and fails where they contain ``fail_on``."""
    (tmp_path / "Makefile").write_text(MAKEFILE)
    (tmp_path / "wh").mkdir()
    (tmp_path / ".site").mkdir()
    (tmp_path / ".site" / ".installed").touch()
    os.utime(tmp_path / "wh", (0, 0))  # the wheels are older than the stamp: nothing to install
    fake = tmp_path / "fake_python"
    fake.write_text(f'#!/bin/sh\necho ran "$@"\ncase "$*" in *"{fail_on}"*) exit 3;; esac\n')
    fake.chmod(0o755)
    return _make(
        "gpu-check", "WHEELS=wh", f"PYTHON={sys.executable}", f"PY={fake}", "GPU_TEST_ARGS=-x",
        "GPU_BENCH_ARGS=rounds=1", *extra, cwd=tmp_path, OUT=str(tmp_path / "out"),
    )  # fmt: skip


def test_gpu_check_runs_the_tests_then_the_bench_into_one_flat_folder(tmp_path):
    run = _gpu_check(tmp_path, fail_on="no-such-argument")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"  # $OUT is the default folder
    tests = f"ran -m pytest -m gpu -q --junitxml={out}/test_gpu.xml -x"
    bench = f"ran -m experiments.bench --config-name=bench_gpu output_file={out}/bench.json"
    assert run.stdout.index(tests) < run.stdout.index(bench), run.stdout
    assert f"history_file={out}/bench_history.csv rounds=1" in run.stdout
    assert tests in (out / "test_gpu.log").read_text() and bench in (out / "bench.log").read_text()
    assert all(p.is_file() for p in out.iterdir())  # $OUT brings back files, not folders


@pytest.mark.parametrize("failing", ["-m pytest", "-m experiments.bench"])
def test_gpu_check_runs_the_bench_after_failed_tests_and_fails_naming_the_step(tmp_path, failing):
    run = _gpu_check(tmp_path, fail_on=failing)
    assert run.returncode != 0
    assert "ran -m experiments.bench" in run.stdout  # the bench runs even when the tests failed
    step, other = ("test-gpu", "bench-gpu") if failing == "-m pytest" else ("bench-gpu", "test-gpu")
    assert f"make {step} failed" in run.stderr and f"make {other} failed" not in run.stderr


def test_gpu_check_with_gpu_tests_0_runs_the_bench_alone(tmp_path):
    run = _gpu_check(tmp_path, "-m pytest", "GPU_TESTS=0")  # the tests would fail: they must not run
    assert run.returncode == 0, run.stderr
    assert "ran -m pytest" not in run.stdout and "make test-gpu skipped (GPU_TESTS=0)" in run.stdout
    assert "ran -m experiments.bench --config-name=bench_gpu" in run.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.log"]


def test_gpu_check_defaults_to_a_dated_folder_under_outputs_without_out():
    run = _make("-s", "--eval", "print-gpu-out: ; @echo $(GPU_OUT)", "print-gpu-out")
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"outputs/gpu_check/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run.stdout.strip())


def test_wheels_are_pinned_to_the_venv_and_built_for_the_gpu_image():
    dry = _make("-n", "wheels")
    assert dry.returncode == 0, dry.stderr
    pins = dict(re.findall(r"\b([A-Za-z0-9_.-]+)==(\S+)", dry.stdout))
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "decord"} <= set(pins), pins
    assert pins == {name: importlib.metadata.version(name) for name in pins}
    download = next(line for line in dry.stdout.split("pip ") if line.startswith("download"))
    assert "--only-binary=:all:" in download and "--no-deps" in download and "--python-version 3.12" in download
    assert "--platform manylinux2014_x86_64" in download and "decord==" in download
    missing = _make("-n", "wheels", "WHEEL_PACKAGES=no-such-package")
    assert missing.returncode != 0 and ".venv lacks one of no-such-package" in missing.stderr
