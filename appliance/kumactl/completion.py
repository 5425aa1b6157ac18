"""`kumactl completion bash|zsh|fish`: shell completion, as Kuma's cobra gives it.

Like cobra, the scripts are thin: on TAB they run the hidden `kumactl __complete WORDS... CURRENT` (handled
before argument parsing, by `main`), which
walks kumactl's own argument parser (so every command and flag is there, and stays there as commands
change) and prints the candidates, one a line. Nothing printed: the shell completes file names.
"""
from __future__ import annotations

import argparse

BASH = """# bash completion for kumactl (source it, or put it in /etc/bash_completion.d/kumactl)
_kumactl_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(kumactl __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _kumactl_complete kumactl
"""

ZSH = """#compdef kumactl
# zsh completion for kumactl (source it, or put it as _kumactl in a directory of your $fpath)
_kumactl() {
    local -a candidates
    local IFS=$'\\n'
    candidates=($(kumactl __complete "${(@)words[2,$CURRENT]}" 2>/dev/null))
    if (( ${#candidates} )); then
        compadd -- "${candidates[@]}"
    else
        _files
    fi
}
if [ "$funcstack[1]" = "_kumactl" ]; then
    _kumactl "$@"
else
    compdef _kumactl kumactl
fi
"""

FISH = """# fish completion for kumactl (source it, or put it in ~/.config/fish/completions/kumactl.fish)
function __kumactl_complete
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l current (commandline -ct)
    set -l candidates (kumactl __complete $tokens "$current" 2>/dev/null)
    if test (count $candidates) -gt 0
        printf '%s\\n' $candidates
    else
        __fish_complete_path "$current"
    end
end
complete -c kumactl -f -a '(__kumactl_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _visible_flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(option for option, action in _flags(parser).items()
                  if action.help != argparse.SUPPRESS and option.startswith("--"))


def _join_equals(words: list[str]) -> list[str]:
    """bash splits `--type=stats` into `--type`, `=`, `stats`: put such words back together."""
    joined: list[str] = []
    for word in words:
        if joined and (word == "=" or joined[-1].endswith("=")) and joined[-1].startswith("-"):
            joined[-1] += word
        else:
            joined.append(word)
    return joined


def candidates(root: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Completions of the last of `words` (what is typed after `kumactl`, the word under the cursor last)."""
    split_by_shell = "=" in words
    words = _join_equals(words) or [""]
    *done, current = words
    parser, pending = root, None
    for word in done:
        if pending is not None:
            pending = None
        elif word.startswith("-"):
            action = _flags(parser).get(word.split("=", 1)[0])
            if action is not None and _takes_value(action) and "=" not in word:
                pending = action
        elif word in _subcommands(parser):
            parser = _subcommands(parser)[word]
    if pending is not None:
        return [c for c in map(str, pending.choices or ()) if c.startswith(current)]
    if current.startswith("-") and "=" in current:
        flag, typed = current.split("=", 1)
        action = _flags(parser).get(flag)
        values = [str(c) for c in (action.choices or ())] if action is not None else []
        prefix = "" if split_by_shell else f"{flag}="
        return [prefix + v for v in values if v.startswith(typed)]
    if current.startswith("-"):
        return [f for f in _visible_flags(parser) if f.startswith(current)]
    positional = [str(c) for a in parser._actions if not a.option_strings and a.choices
                  and not isinstance(a, argparse._SubParsersAction) for c in a.choices]
    return sorted(name for name in [*_subcommands(parser), *positional] if name.startswith(current))


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    completion = sub.add_parser(
        "completion", parents=[common], help="Generate the autocompletion script for the specified shell",
        description="Generate the autocompletion script for kumactl for the specified shell: "
                    "`source <(kumactl completion bash)`, `source <(kumactl completion zsh)`, "
                    "`kumactl completion fish | source`.")
    completion.add_argument("shell", choices=sorted(SCRIPTS), metavar="{bash,fish,zsh}")
    completion.set_defaults(run=lambda ctx: ctx.out.write(SCRIPTS[ctx.args.shell]))
