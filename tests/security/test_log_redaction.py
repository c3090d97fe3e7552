"""Log lines stay redacted now that ``logging`` is imported only when a line is written
(issue 16): whoever imports it, and whenever, a third-party plugin's lines go through the
redacting handler, with -v and without. Runs the real console script."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import keyhelper
from plugin_dists import MARK, make_distribution

SECRET = "sk-ant-Secret_0123456789abcdefXYZ"

# logging imported inside fetch, after keyhelper set up its own: a plain logger of its own,
# no handler, so Python's fallback (logging.lastResort) would print the line as it is.
LATE_LOGGER = MARK + """
from keyhelper.backend import Backend

class LateBackend(Backend):
    summary = "imports logging inside fetch and logs the key it got"

    def fetch(self):
        import logging

        token = self.context.fetch_other("source")
        logging.getLogger("lateplug").warning("got %s", token.value)
        logging.getLogger("lateplug").debug("debug %s", token.value)
        raise RuntimeError("giving up")
"""


def logging_plugin(site: Path, write_config, name: str, entry_points: dict[str, str],
                   source: str) -> dict[str, str]:
    """Install plugin ``name`` (its module ``source``) into ``site`` beside an env backend
    "source" holding SECRET; the environment that runs it."""
    make_distribution(site, name, "1.0", entry_points, source)
    write_config('[backends.source]\ntype = "env"\nvar = "SOURCE_KEY"\n')
    return {"PYTHONPATH": str(site), "SOURCE_KEY": SECRET}


@pytest.fixture
def late_env(tmp_path: Path, write_config) -> dict[str, str]:
    return logging_plugin(tmp_path / "site", write_config, "lateplug",
                          {"late": "lateplug:LateBackend"}, LATE_LOGGER)


def fp(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def test_a_plugin_importing_logging_late_logs_redacted(late_env: dict[str, str]) -> None:
    run = keyhelper("-b", "late", env=late_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: got <{fp(SECRET)}>\n"
                          "keyhelper: no key from late\n"
                          "  late failed: RuntimeError: giving up\n")


def test_a_plugin_importing_logging_late_logs_redacted_under_verbose(
        late_env: dict[str, str]) -> None:
    run = keyhelper("-v", "-b", "late", env=late_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert SECRET not in run.stderr
    assert f"keyhelper: WARNING lateplug: got <{fp(SECRET)}>\n" in run.stderr


# The contract's logger (keyhelper.backend.get_logger): logging is imported when a line is
# written; -v shows debug lines, without it only warnings; redacted either way.
LAZY_LOGGER = MARK + """
from keyhelper.backend import Backend, get_logger

log = get_logger("keyhelper_plugins.lazy")

class LazyBackend(Backend):
    summary = "logs through the contract's logger"

    def fetch(self):
        token = self.context.fetch_other("source")
        log.debug("debug %s", token.value)
        log.warning("warning %s", token.value)
        raise RuntimeError("giving up")
"""


@pytest.fixture
def lazy_env(tmp_path: Path, write_config) -> dict[str, str]:
    return logging_plugin(tmp_path / "site", write_config, "lazyplug",
                          {"lazy": "lazyplug:LazyBackend"}, LAZY_LOGGER)


def test_the_contracts_logger_without_verbose(lazy_env: dict[str, str]) -> None:
    run = keyhelper("-b", "lazy", env=lazy_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: warning <{fp(SECRET)}>\n"
                          "keyhelper: no key from lazy\n"
                          "  lazy failed: RuntimeError: giving up\n")


def test_the_contracts_logger_under_verbose(lazy_env: dict[str, str]) -> None:
    run = keyhelper("-v", "-b", "lazy", env=lazy_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert SECRET not in run.stderr
    assert f"keyhelper: DEBUG keyhelper_plugins.lazy: debug <{fp(SECRET)}>\n" in run.stderr
    assert f"keyhelper: WARNING keyhelper_plugins.lazy: warning <{fp(SECRET)}>\n" in run.stderr
