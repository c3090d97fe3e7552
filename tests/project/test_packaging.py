"""What pip installed: the built-in backends registered as entry points (the same door as
third-party plugins), the console script, the import names, the typing markers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from keyhelper.backend import Backend
from keyhelper.registry import GROUP

BUILT_INS = {
    "env": "keyhelper_plugins.env:EnvBackend",
    "file": "keyhelper_plugins.file:FileBackend",
    "command": "keyhelper_plugins.command:CommandBackend",
    "vault": "keyhelper_plugins.vault:VaultBackend",
    "jwt": "keyhelper_plugins.jwt:JwtBackend",
    "keyring": "keyhelper_plugins.keyring:KeyringBackend",
    "oidc": "keyhelper_plugins.oidc:OidcBackend",
    "aws_sts": "keyhelper_plugins.aws_sts:AwsStsBackend",
    "vault_aws": "keyhelper_plugins.vault_aws:VaultAwsBackend",
}


def our_entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.distribution("keyhelper").entry_points
            if ep.group == GROUP}


def test_the_built_ins_are_registered_entry_points() -> None:
    assert {name: ep.value for name, ep in our_entry_points().items()} == BUILT_INS
    found = {ep.name for ep in metadata.entry_points(group=GROUP)}
    assert set(BUILT_INS) <= found


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_each_built_in_loads_as_a_backend(name: str) -> None:
    cls = our_entry_points()[name].load()
    assert isinstance(cls, type) and issubclass(cls, Backend)
    assert cls.summary, "shown by `keyhelper backends`"
    for option in cls.options.values():
        assert option.help, f"{name}: every option has a help line for the README table"


def test_the_console_script() -> None:
    scripts = {ep.name: ep.value for ep in metadata.distribution("keyhelper").entry_points
               if ep.group == "console_scripts"}
    assert scripts == {"keyhelper": "keyhelper.console:main"}


def test_dependencies_give_every_backend_its_library() -> None:
    requires = {req.split(">")[0].split("=")[0].split(";")[0].strip().lower()
                for req in metadata.requires("keyhelper") or [] if "extra ==" not in req}
    # cachetools was declared and never used: dropped (issue 11); the gateway side brings it
    # back where an in-process TTL cache belongs.
    assert {"click", "pyjwt[crypto]", "keyring"} <= requires
    # The vault backend speaks HTTP with the standard library (issue 16): hvac is the tests'.
    assert "hvac" not in requires


@pytest.mark.parametrize("package", ["keyhelper", "keyhelper_plugins"])
def test_typing_marker_is_shipped(package: str) -> None:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    assert (Path(next(iter(spec.submodule_search_locations))) / "py.typed").is_file()


IMPORT_ALL = """\
import sys
import keyhelper_plugins.env, keyhelper_plugins.file, keyhelper_plugins.command
import keyhelper_plugins.vault, keyhelper_plugins.jwt, keyhelper_plugins.keyring
heavy = {"hvac", "jwt", "keyring", "requests", "cryptography", "cachetools"}
print(" ".join(sorted(heavy & set(sys.modules))))
"""


def test_importing_the_plugins_does_not_import_their_libraries(tmp_path: Path) -> None:
    """Backend libraries load inside fetch()/check_available, never at import."""
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, "\n", "")


def test_the_plugins_directory_is_not_importable_as_plugins(tmp_path: Path) -> None:
    """Installed under a name that cannot collide: `keyhelper_plugins`, not `plugins`."""
    code = "import importlib.util as u; print(u.find_spec('plugins') is None)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=60, check=False)
    assert run.stdout == "True\n"


def test_every_package_is_shipped() -> None:
    """A regular (non-editable) install ships only the packages pyproject lists: a new
    subpackage left out works in the editable checkout and breaks every real install."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(init.parent.relative_to(root).parts)
             for init in (root / "keyhelper").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
