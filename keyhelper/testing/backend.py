"""Contract tests for keyhelper backends: subclass them in your plugin's test suite.

Like keyring's ``BackendBasicTests``: the classes hold the tests, you fill in the hooks::

    from keyhelper.testing import BackendContract, Setup, SkipContract

    class TestMyStore(BackendContract, SkipContract):
        backend_type = "mystore"                  # your entry point's name
        distribution = "keyhelper-mystore"        # your distribution's name

        def configured(self, key, tmp_path):      # a setup whose fetch returns ``key``
            store_the_key_somewhere(key)
            return Setup({"url": URL}, env={"MYSTORE_TOKEN": "t"})

        def unconfigured(self, tmp_path):         # a setup where fetch must raise Skip
            return Setup({"url": URL}, env={})

:class:`SkipContract` (hook ``unconfigured``) is for backends that can be "not configured
here" (most are). Add :class:`FailureContract` (hook ``failing``) when your backend can fail
once configured, and :class:`DeadlineContract` (hook ``hanging``) when its fetch can block
(network, D-Bus, a child process).

A test's environment is exactly ``base_env()`` plus the setup's ``env``, and ``os.environ``
holds the same during the fetch, so libraries that read ``os.environ`` (boto3, hvac) see
what the backend sees and never the developer's own credentials.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pytest

from keyhelper.backend import Backend, Context, Option, Token, option_fits
from keyhelper.errors import BackendError, ConfigError, Skip, Unavailable
from keyhelper.registry import GROUP, Registry

# Modules a backend must import inside fetch(), never when its module is imported or its
# check_available() runs (they cost 50-100 ms each, paid on every cache miss otherwise).
HEAVY_MODULES = ("boto3", "botocore", "hvac", "requests", "urllib3", "keyring", "jwt",
                 "cryptography", "google", "azure", "httpx", "aiohttp", "click")
WRONG_VALUES: tuple[Any, ...] = ({"wrong": 1}, ["wrong"], "wrong", 1.5, 7, True)


@dataclass
class Setup:
    """Options for ``[backends.NAME]`` and the environment a test's backend runs with."""

    options: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def exact_environ(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` holds exactly ``env`` inside the block, and is restored after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class BackendContract:
    """What every backend must do. Fill in ``backend_type`` and ``configured``."""

    #: The name of your entry point in the ``keyhelper.backends`` group.
    backend_type: ClassVar[str]
    #: Your distribution's name, checked against the entry point's (None: not checked).
    distribution: ClassVar[str | None] = None
    #: Modules your backend imports lazily, on top of :data:`HEAVY_MODULES`.
    lazy_modules: ClassVar[tuple[str, ...]] = ()
    #: Seconds a test's fetch may take (the run's deadline in the Context).
    deadline: ClassVar[float] = 10.0

    # --- hooks -----------------------------------------------------------------------------

    def configured(self, key: str, tmp_path: Path) -> Setup:
        """A setup whose fetch returns a Token with exactly ``key``."""
        raise NotImplementedError

    def base_env(self, tmp_path: Path) -> dict[str, str]:
        """The environment under every setup's own: a PATH and an empty HOME."""
        home = tmp_path / "contract-home"
        home.mkdir(exist_ok=True)
        return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home)}

    def resolve_other(self, name: str) -> Token:
        """What ``context.fetch_other(name)`` returns; by default no other backend exists."""
        raise ConfigError(f"backend {name!r} cannot be used from here")

    # --- helpers ---------------------------------------------------------------------------

    @property
    def backend_class(self) -> type[Backend]:
        """The class your entry point names, loaded as keyhelper loads it."""
        return Registry().load(self.backend_type)

    def make_backend(self, setup: Setup, tmp_path: Path,
                     deadline: float | None = None) -> Backend:
        """Validate ``setup.options`` and build the backend as the core does."""
        cls = self.backend_class
        options = cls.validate(setup.options, source="contract test",
                               key=f"backends.{self.backend_type}")
        state_dir = tmp_path / "contract-state"
        state_dir.mkdir(mode=0o700, exist_ok=True)
        env = {**self.base_env(tmp_path), **setup.env}
        context = Context(None, env, time.monotonic() + (deadline or self.deadline),
                          str(state_dir), fetch_other=self.resolve_other)
        return cls(self.backend_type, options, context)

    def fetch(self, backend: Backend) -> Token:
        """Run ``backend.fetch()`` with ``os.environ`` equal to its context's env."""
        with exact_environ(backend.context.env):
            return backend.fetch()

    @pytest.fixture
    def key(self) -> str:
        """A fresh key for each test, shaped like an Anthropic API key."""
        return "sk-ant-kit-" + secrets.token_urlsafe(24)

    # --- the contract ----------------------------------------------------------------------

    def test_entry_point_is_registered(self) -> None:
        found = [ep for ep in metadata.entry_points(group=GROUP) if ep.name == self.backend_type]
        assert found, f"no entry point {self.backend_type!r} in the {GROUP!r} group"
        assert len(found) == 1, f"several distributions claim {self.backend_type!r}: {found}"
        assert found[0].load() is self.backend_class
        if self.distribution is not None:
            info = Registry().info(self.backend_type)
            assert _norm(info.distribution) == _norm(self.distribution), info
            assert info.version != "unknown"

    def test_class_declares_its_contract(self) -> None:
        cls = self.backend_class
        assert issubclass(cls, Backend)
        assert isinstance(cls.summary, str) and cls.summary.strip(), "set a one-line summary"
        for name, spec in cls.options.items():
            assert isinstance(name, str) and name.isidentifier(), name
            assert isinstance(spec, Option), f"option {name!r} is not an Option"
            assert name != "type", "'type' is keyhelper's own key in [backends.NAME]"
            if spec.default is not None:
                assert option_fits(spec.default, spec), f"default of {name!r} has a wrong type"
        assert isinstance(cls.cacheable, bool)

    def test_returns_the_exact_key(self, key: str, tmp_path: Path) -> None:
        backend = self.make_backend(self.configured(key, tmp_path), tmp_path)
        token = self.fetch(backend)
        assert isinstance(token, Token)
        assert token.value == key
        if token.expires_at is not None:
            assert isinstance(token.expires_at, int | float)
            assert token.expires_at > time.time(), "expires_at is epoch seconds, in the future"
        for name, value in token.metadata.items():
            assert isinstance(name, str) and isinstance(value, str)
            assert key not in value, f"metadata {name!r} holds the key"
        assert all(isinstance(name, str) for name in backend.watched_env())

    def test_rejects_unknown_options(self, key: str, tmp_path: Path) -> None:
        options = {**self.configured(key, tmp_path).options, "no_such_option": 1}
        with pytest.raises(ConfigError) as raised:
            self.backend_class.validate(options, source="config.toml", key="backends.x")
        assert raised.value.key == "backends.x.no_such_option"

    def test_rejects_wrong_types(self, key: str, tmp_path: Path) -> None:
        good = self.configured(key, tmp_path).options
        for name, spec in self.backend_class.options.items():
            wrong = next(v for v in WRONG_VALUES if not option_fits(v, spec))
            with pytest.raises(ConfigError) as raised:
                self.backend_class.validate({**good, name: wrong}, source="config.toml",
                                            key="backends.x")
            assert raised.value.key == f"backends.x.{name}"

    def test_requires_its_required_options(self, key: str, tmp_path: Path) -> None:
        good = self.configured(key, tmp_path).options
        for name, spec in self.backend_class.options.items():
            if spec.required:
                options = {k: v for k, v in good.items() if k != name}
                with pytest.raises(ConfigError) as raised:
                    self.backend_class.validate(options, source="config.toml", key="backends.x")
                assert raised.value.key == f"backends.x.{name}"

    def test_never_shows_the_key(self, key: str, tmp_path: Path) -> None:
        backend = self.make_backend(self.configured(key, tmp_path), tmp_path)
        token = self.fetch(backend)
        for text in (repr(token), str(token), repr(backend), str(backend),
                     repr(backend.context), repr(backend.config)):
            assert key not in text, text

    def test_check_available_uses_no_network(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []

        def refuse(name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                raise OSError(f"network use in check_available: {name}")
            return call

        for name in ("connect", "connect_ex", "sendto"):
            monkeypatch.setattr(socket.socket, name, refuse(f"socket.{name}"))
        monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        cls = self.backend_class
        try:
            cls.check_available()
        except Unavailable as exc:
            assert str(exc).strip(), "say what to install"
        assert calls == []

    def test_import_and_check_available_stay_light(self) -> None:
        """Importing the module and check_available() import no heavy library (a subprocess,
        so that other tests' imports do not hide one)."""
        code = (
            "import sys\n"
            "from importlib import metadata\n"
            f"ep = [e for e in metadata.entry_points(group={GROUP!r}) "
            f"if e.name == {self.backend_type!r}][0]\n"
            "before = set(sys.modules)\n"
            "cls = ep.load()\n"
            "try:\n    cls.check_available()\nexcept Exception:\n    pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
        heavy = sorted(set(out) & {*HEAVY_MODULES, *self.lazy_modules})
        assert heavy == [], f"imported at module level or in check_available: {heavy}"


class SkipContract:
    """For backends that can be "not configured here" (most). Fill in ``unconfigured``."""

    def unconfigured(self, tmp_path: Path) -> Setup:
        """A setup where the backend is not configured on this machine: fetch raises Skip."""
        raise NotImplementedError

    def test_skips_when_not_configured(self, key: str, tmp_path: Path) -> None:
        contract: Any = self
        backend = contract.make_backend(self.unconfigured(tmp_path), tmp_path)
        with pytest.raises(Skip) as raised:
            contract.fetch(backend)
        assert str(raised.value).strip(), "say why the backend skipped"
        assert key not in str(raised.value)


class FailureContract:
    """For backends that can fail once configured. Fill in ``failing``."""

    def failing(self, key: str, tmp_path: Path) -> Setup:
        """A setup that is configured here but broken, ideally with ``key`` nearby (a file
        holding it with a wrong mode, a command printing it then exiting non-zero)."""
        raise NotImplementedError

    def test_fails_with_backend_error_not_skip(self, key: str, tmp_path: Path) -> None:
        contract: Any = self
        backend = contract.make_backend(self.failing(key, tmp_path), tmp_path)
        # Skip is caught too (it is not a BackendError), to say what is wrong with it.
        with pytest.raises((BackendError, Skip)) as raised:
            contract.fetch(backend)
        assert not isinstance(raised.value, Skip), "configured but broken is a failure"
        assert str(raised.value).strip(), "say what went wrong"

    def test_failure_never_shows_the_key(self, key: str, tmp_path: Path) -> None:
        contract: Any = self
        backend = contract.make_backend(self.failing(key, tmp_path), tmp_path)
        with pytest.raises(Exception) as raised:  # any error: its text is checked
            contract.fetch(backend)
        texts = [str(raised.value), repr(raised.value),
                 "".join(traceback.format_exception(raised.value))]
        for text in texts:
            assert key not in text, text


class DeadlineContract:
    """For backends whose fetch can block. Fill in ``hanging``."""

    #: Seconds past the deadline that a fetch may still take (timeouts are not exact).
    deadline_slack: ClassVar[float] = 2.0

    def hanging(self, tmp_path: Path) -> Setup:
        """A setup whose fetch would block for long (a server that accepts connections and
        never answers, a command that sleeps)."""
        raise NotImplementedError

    def test_respects_the_deadline(self, tmp_path: Path) -> None:
        contract: Any = self
        deadline = 0.5
        backend = contract.make_backend(self.hanging(tmp_path), tmp_path, deadline=deadline)
        outcome: dict[str, BaseException | Token] = {}

        def run() -> None:
            try:
                outcome["result"] = contract.fetch(backend)
            except BaseException as exc:
                outcome["result"] = exc

        started = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(deadline + self.deadline_slack)
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), (
            f"fetch still running {elapsed:.1f} s after a {deadline} s deadline: bound every "
            "call by self.context.timeout(...)")
        result = outcome["result"]
        assert not isinstance(result, Skip), f"a missed deadline is a failure: {result}"
        assert isinstance(result, BackendError), result


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
