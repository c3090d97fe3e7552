"""A real gnome-keyring Secret Service in a private D-Bus session bus, for the keyring tests.

Nothing here touches the developer's session: the bus is our own ``dbus-daemon`` with a
config that has no service directories (so nothing is D-Bus-activated with the real HOME),
and gnome-keyring keeps its keyrings in a fresh XDG_DATA_HOME, unlocked with a known
password read from stdin. Readiness is the bus's own NameOwnerChanged signal, not a sleep.
Needs the Debian packages gnome-keyring, dbus and libsecret-tools (.ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jeepney import DBusAddress, MatchRule, message_bus, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection

SECRETS_NAME = "org.freedesktop.secrets"
SECRETS_PATH = "/org/freedesktop/secrets"
LOGIN_COLLECTION = "/org/freedesktop/secrets/collection/login"
PASSWORD = "keyhelper-test-keyring-password"
START_TIMEOUT = 10.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={socket_dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass
class SecretService:
    """A running private bus + gnome-keyring. ``env`` is what a client needs to reach it."""

    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def secret_tool(self, *args: str,
                    input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real ``secret-tool`` (libsecret) against this Secret Service."""
        return subprocess.run(["secret-tool", *args], input=input_text, capture_output=True,
                              text=True, env={**os.environ, **self.env}, timeout=20, check=False)

    def store(self, value: str, **attributes: str) -> None:
        pairs = [part for item in attributes.items() for part in item]
        done = self.secret_tool("store", "--label=keyhelper test", *pairs, input_text=value)
        assert done.returncode == 0, done.stderr

    def lookup(self, **attributes: str) -> str | None:
        pairs = [part for item in attributes.items() for part in item]
        done = self.secret_tool("lookup", *pairs)
        return done.stdout if done.returncode == 0 else None

    def clear(self, **attributes: str) -> None:
        pairs = [part for item in attributes.items() for part in item]
        self.secret_tool("clear", *pairs)

    def search_all(self, **attributes: str) -> str:
        pairs = [part for item in attributes.items() for part in item]
        return self.secret_tool("search", "--all", "--unlock", *pairs).stdout

    def call(self, method: str, signature: str, *body: object) -> tuple[object, ...]:
        """Call a method of the Secret Service's Service interface over the bus."""
        address = DBusAddress(SECRETS_PATH, bus_name=SECRETS_NAME,
                              interface="org.freedesktop.Secret.Service")
        with open_dbus_connection(self.env["DBUS_SESSION_BUS_ADDRESS"]) as conn:
            reply = conn.send_and_get_reply(new_method_call(address, method, signature, body),
                                            timeout=START_TIMEOUT)
        assert reply.header.message_type.name == "method_return", reply.body
        return tuple(reply.body)

    def lock_login(self) -> None:
        """Lock the login collection, as a screen lock or `secret-tool lock` would."""
        locked, _prompt = self.call("Lock", "ao", [LOGIN_COLLECTION])
        assert locked == [LOGIN_COLLECTION]

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def start_secret_service(*, with_keyring: bool = True) -> SecretService:
    """Start a private session bus and an unlocked gnome-keyring on it (or the bus alone)."""
    for tool in ("dbus-daemon", "gnome-keyring-daemon", "secret-tool"):
        assert shutil.which(tool), f"{tool} is missing: apt-get install gnome-keyring dbus " \
                                   "libsecret-tools (see .ci/run)"
    root = Path(tempfile.mkdtemp(prefix="keyhelper-keyring-"))
    for sub in ("bus", "data", "runtime"):
        (root / sub).mkdir(mode=0o700)
    (root / "bus.conf").write_text(BUS_CONFIG.format(socket_dir=root / "bus"))
    service = SecretService(root, {})
    try:
        bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={root / 'bus.conf'}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        service.processes.append(bus)
        assert bus.stdout is not None
        address = bus.stdout.readline().decode().strip()
        assert address.startswith("unix:"), "dbus-daemon printed no address"
        service.env = {"DBUS_SESSION_BUS_ADDRESS": address,
                       "XDG_DATA_HOME": str(root / "data")}
        if not with_keyring:
            return service
        daemon_env = {**os.environ, **service.env, "XDG_RUNTIME_DIR": str(root / "runtime"),
                      "HOME": str(root)}
        with open_dbus_connection(address) as conn:
            rule = MatchRule(type="signal", sender=message_bus.bus_name,
                             interface=message_bus.interface, member="NameOwnerChanged",
                             path=message_bus.object_path)
            rule.add_arg_condition(0, SECRETS_NAME)
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=START_TIMEOUT)
            with conn.filter(rule) as signals:
                keyring = subprocess.Popen(
                    ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    env=daemon_env)
                service.processes.append(keyring)
                assert keyring.stdin is not None
                keyring.stdin.write(PASSWORD.encode())
                keyring.stdin.close()
                _wait_for_owner(conn, signals)
    except BaseException:
        service.stop()
        raise
    return service


def _wait_for_owner(conn: DBusConnection, signals: object) -> None:
    """Block until org.freedesktop.secrets has an owner on the bus (its signal, or now)."""
    reply = conn.send_and_get_reply(message_bus.NameHasOwner(SECRETS_NAME), timeout=START_TIMEOUT)
    if reply.body[0]:
        return
    while True:
        message = conn.recv_until_filtered(signals, timeout=START_TIMEOUT)  # type: ignore[arg-type]
        _name, _old, new = message.body
        if new:
            return


@pytest.fixture(scope="session")
def secret_service() -> Iterator[SecretService]:
    """One gnome-keyring for the whole session (tests use distinct service names)."""
    service = start_secret_service()
    yield service
    service.stop()


@pytest.fixture
def bare_session_bus() -> Iterator[SecretService]:
    """A private session bus on which no Secret Service runs (and none can be activated)."""
    service = start_secret_service(with_keyring=False)
    yield service
    service.stop()


@pytest.fixture
def fresh_secret_service() -> Iterator[SecretService]:
    """A gnome-keyring of its own, for a test that locks or breaks it."""
    service = start_secret_service()
    yield service
    service.stop()


def client_env(service: SecretService, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a keyhelper subprocess that should reach ``service``."""
    return {**service.env, **(extra or {})}
