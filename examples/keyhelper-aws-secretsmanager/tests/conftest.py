"""A real moto server on a free loopback port, and an isolated environment per test.

The isolated environment (a fresh HOME, XDG and cache directories, no keyhelper, Vault or
Claude Code variables) is keyhelper's own kit, keyhelper.testing.fixtures. Imported by name
rather than listed in ``pytest_plugins``, which pytest refuses in a conftest.py below the
rootdir (as this one is when keyhelper's own suite runs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyhelper.testing.fixtures import isolated_env, write_config  # noqa: F401  (fixtures)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    assert binary, "moto_server not found next to python: pip install 'moto[server]'"
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.05)  # polling a server's readiness, not synchronising with a test
    raise AssertionError(f"moto_server not ready in 20 s: {log.read_text()}")


@pytest.fixture
def moto(moto_url: str) -> str:
    """The server, emptied for this test."""
    request = urllib.request.Request(moto_url + "/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
        pass
    return moto_url


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer AWS credentials, profile or region reach a test (keyhelper's own
    variables are cleared by isolated_env)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
