"""The command-line skeleton: version, help without torch, poolings, error lines and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from drasp_cli import __version__, cli
from drasp_cli.errors import CheckpointError
from drasp_cli.pooling import POOLINGS


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drasp_cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"drasp {__version__}"


def test_help_lists_the_commands_and_does_not_import_torch():
    code = (
        "import sys\n"
        "from drasp_cli import cli\n"
        "try:\n    cli.app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for command in ("score", "train", "eval", "poolings"):
        assert command in r.stdout
    assert r.stdout.strip().endswith("NO-TORCH")


def test_poolings_prints_one_line_per_method_on_stdout():
    r = run("poolings")
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(POOLINGS)


def test_usage_errors_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2


def test_library_errors_become_one_line_on_stderr(monkeypatch, capsys):
    def broken():
        raise CheckpointError("model.safetensors: weights do not match config.json")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("DRASP_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "drasp: error: model.safetensors: weights do not match config.json\n"


def test_debug_shows_the_traceback(monkeypatch):
    def broken():
        raise CheckpointError("boom")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setenv("DRASP_DEBUG", "1")
    with pytest.raises(CheckpointError, match="boom"):
        cli.main()
