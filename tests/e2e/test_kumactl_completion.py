"""`kumactl completion bash|zsh|fish`: the scripts, sourced by the real shells, complete kumactl's commands.

Each shell's completion function is called as the shell calls it on TAB (zsh with its `compadd` stubbed
to print), with `kumactl` on PATH as a user has it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, cp_command


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    wrapper = tmp_path / "bin" / "kumactl"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join(cp_command('ctl'))} \"$@\"\n")
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{wrapper.parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path)}


def _shell(env: dict[str, str], *command: str) -> list[str]:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash(env: dict[str, str]) -> None:
    def complete(*words: str) -> list[str]:
        script = ('source <(kumactl completion bash); COMP_WORDS=(kumactl "$@"); COMP_CWORD=$#; '
                  '_kumactl_complete; printf "%s\\n" "${COMPREPLY[@]}"')
        return _shell(env, "bash", "-c", script, "bash", *words)
    assert complete("ins") == ["inspect", "install"]
    assert complete("inspect", "dataplane", "web-1", "--ty") == ["--type"]
    assert complete("completion", "") == ["bash", "fish", "zsh"]
    assert complete("inspect", "--log-level", "=", "of") == ["off"]


def test_zsh(env: dict[str, str]) -> None:
    def complete(*words: str) -> list[str]:
        script = ('autoload -U compinit && compinit -u && source <(kumactl completion zsh); '
                  'compadd() { shift; print -l -- "$@"; }; words=(kumactl "$@"); CURRENT=${#words}; _kumactl')
        return _shell(env, "zsh", "-c", script, "zsh", *words)
    assert complete("gen") == ["generate"]
    assert complete("inspect", "zoneegress", "e", "--inc") == ["--include-eds"]


def test_fish(env: dict[str, str]) -> None:
    def complete(line: str) -> list[str]:
        return _shell(env, "fish", "-c", f"kumactl completion fish | source; complete -C {shlex.quote(line)}")
    assert complete("kumactl insp") == ["inspect"]
    assert complete("kumactl inspect zoneegress e --ty") == ["--type"]
    assert complete("kumactl completion ") == ["bash", "fish", "zsh"]
