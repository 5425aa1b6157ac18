"""`kumactl __complete`: the candidates the completion scripts offer, from kumactl's own parser."""
from __future__ import annotations

import pytest

from appliance.kumactl import build_parser
from appliance.kumactl.completion import candidates


@pytest.mark.parametrize("words, expected", [
    ([""], ["apply", "completion", "config", "delete", "export", "generate", "get", "inspect", "install", "uninstall",
            "version"]),
    (["ins"], ["inspect", "install"]),
    (["install", "transparent-proxy", "--redirect-dns"], ["--redirect-dns", "--redirect-dns-port"]),
    (["inspect", "zone"], ["zoneegress", "zoneegresses"]),
    (["inspect", "dataplane", "web-1", "--ty"], ["--type"]),
    (["--config-file", "k.yaml", "inspect", "dataplane", "web-1", "--inc"], ["--include", "--include-eds"]),
    (["completion", ""], ["bash", "fish", "zsh"]),
    (["inspect", "--log-level", ""], ["off", "info", "debug"]),
    (["inspect", "--log-level=d"], ["--log-level=debug"]),               # zsh, fish: one word
    (["inspect", "--log-level", "=", "d"], ["debug"]),                   # bash splits at '='
    (["apply", "-f", ""], []),                                           # a file: the shell's own completion
])
def test_candidates(words: list[str], expected: list[str]) -> None:
    assert candidates(build_parser(), words) == expected


def test_hidden_flags_are_not_offered() -> None:
    offered = candidates(build_parser(), ["inspect", "dataplane", "web-1", "--"])
    assert "--type" in offered and "--config-dump" not in offered     # deprecated, as in Kuma
