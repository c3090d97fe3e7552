"""moto's server on loopback, for the AWS backends (aws_sts): a real HTTP server speaking
the STS query API, not a mock inside the test process. One per session; ``moto`` empties it.
(The example plugin's tests start their own: that package stands alone.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import free_port


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], log: str) -> None:
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {Path(log).read_text()}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a server's readiness, not synchronising with a test
    raise AssertionError(f"moto_server not ready in 20 s: {Path(log).read_text()}")


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    assert binary, "moto_server not found next to python: pip install 'moto[server]'"
    port = free_port()
    log = str(tmp_path_factory.mktemp("moto") / "moto.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def moto(moto_url: str) -> str:
    """The server, emptied for this test."""
    request = urllib.request.Request(moto_url + "/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
    return moto_url
