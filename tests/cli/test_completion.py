"""Shell completion (issue 11): click's completion for bash, zsh and fish through the real
console script, which must hand ``_KEYHELPER_COMPLETE`` to the CLI instead of looking up a key."""

from __future__ import annotations

import pytest
from helpers import keyhelper


@pytest.mark.parametrize(("shell", "first_line"), [
    ("bash", "_keyhelper_completion() {"),
    ("zsh", "#compdef keyhelper"),
    ("fish", "function _keyhelper_completion;"),
])
def test_completion_script_for_each_shell(shell: str, first_line: str) -> None:
    run = keyhelper(env={"_KEYHELPER_COMPLETE": f"{shell}_source"})
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.lstrip().splitlines()[0] == first_line


def complete(words: str, cword: int, **env: str) -> list[str]:
    run = keyhelper(env={"_KEYHELPER_COMPLETE": "bash_complete", "COMP_WORDS": words,
                         "COMP_CWORD": str(cword), **env})
    assert (run.returncode, run.stderr) == (0, "")
    return [line for line in run.stdout.splitlines() if line]


def test_completes_commands_subcommands_and_choices() -> None:
    assert complete("keyhelper ca", 1) == ["plain,cache"]
    assert complete("keyhelper cache ", 2) == ["plain,clear", "plain,status"]
    assert complete("keyhelper setup claude-code --scope ", 4) == ["plain,user", "plain,project"]


def test_completes_profiles_and_backends_from_the_config(write_config) -> None:  # type: ignore[no-untyped-def]
    write_config('[profiles.prod]\n[profiles.dev]\n[backends.myvault]\ntype = "vault"\n'
                 'path = "secret/x"\n')
    assert complete("keyhelper doctor --profile ", 3) == ["plain,dev", "plain,prod"]
    assert "plain,myvault" in complete("keyhelper doctor --backend my", 3)
    assert complete("keyhelper doctor --backend my", 3) == ["plain,myvault"]


def test_a_broken_config_completes_nothing_and_prints_no_error(write_config) -> None:  # type: ignore[no-untyped-def]
    write_config("not [valid toml\n")
    assert complete("keyhelper doctor --profile ", 3) == []
