"""Where a sign-in lives: the refresh token in the OS keyring when one is usable, else in a
0600 file of keyhelper's private state directory; who signed in, and when, beside it. Never
in the key cache: the cache holds the access token only.

The refresh grant runs under a lock of its own (:func:`session_lock`), besides the cache
entry's: a refresh token rotates, and a provider revokes the whole family when an old one
is spent again, so no two processes may ever spend the same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from keyhelper import redact
from keyhelper.backend import (
    Context,
    dump_record,
    load_record,
    private_dir_problem,
    read_state_file,
    record_number,
    write_state_file,
)
from keyhelper.errors import BackendError, DeadlineExceeded, Skip
from keyhelper.oskeyring import OsKeyring

log = logging.getLogger(__name__)

FORMAT = "keyhelper-oidc-session 1"
FIELDS = ("issuer", "client", "subject", "name", "signed_in", "refresh_expires", "store",
          "refresh_token")
KEYRING_SERVICE = "keyhelper-oidc"
KEYRING_SECONDS = 3.0
LOCK_POLL = 0.02


@dataclass(frozen=True)
class Session:
    """A sign-in. ``refresh_token`` is empty when it lives in the keyring (``store``)."""

    issuer: str
    client: str
    subject: str
    name: str
    signed_in: float
    refresh_expires: float | None
    store: str  # "file" or "keyring"
    refresh_token: str = ""

    def __repr__(self) -> str:
        return f"Session(issuer={self.issuer!r}, subject={self.subject!r}, store={self.store!r})"

    def serialize(self) -> bytes:
        expires = "-" if self.refresh_expires is None else repr(self.refresh_expires)
        return dump_record(FORMAT, [
            ("issuer", self.issuer), ("client", self.client), ("subject", self.subject),
            ("name", self.name), ("signed_in", repr(self.signed_in)),
            ("refresh_expires", expires), ("store", self.store),
            ("refresh_token", self.refresh_token if self.store == "file" else "")])

    @classmethod
    def parse(cls, data: bytes) -> Session | None:
        fields = load_record(FORMAT, data, FIELDS)
        if fields is None or fields["store"] not in ("file", "keyring"):
            return None
        try:
            signed_in = record_number(fields["signed_in"])
            expires = (None if fields["refresh_expires"] == "-"
                       else record_number(fields["refresh_expires"]))
        except ValueError:
            return None
        return cls(fields["issuer"], fields["client"], fields["subject"], fields["name"],
                   signed_in, expires, fields["store"], fields["refresh_token"])


class SessionStore:
    """One sign-in's files (``<dir>/oidc-<id>``, ``.lock``) and keyring item (``<id>``)."""

    def __init__(self, context: Context, directory: str, ident: str, where: str,
                 label: str, keyring_backend: str | None):
        self.context = context
        self.directory = directory
        self.ident = ident
        self.where = where  # "auto", "keyring" or "file"
        self.label = label
        self.path = os.path.join(directory, f"oidc-{ident}") if directory else ""
        self._keyring = OsKeyring(context.env, lambda: context.timeout(KEYRING_SECONDS),
                                  backend_name=keyring_backend, label=label)

    def describe(self, session: Session) -> str:
        if session.store == "keyring":
            return f"the OS keyring ({KEYRING_SERVICE}, {self.ident})"
        return self.path

    # --- read, write, delete --------------------------------------------------------------

    def read(self) -> Session | None:
        """The sign-in with its refresh token; None when signed out."""
        data = read_state_file(self.path) if self.path else None
        session = Session.parse(data) if data else None
        if session is None:
            return None
        if session.store == "keyring":
            token = self._keyring.get(KEYRING_SERVICE, self.ident)
            if not token:
                return None
            session = replace(session, refresh_token=token)
        redact.remember(session.refresh_token)
        return session if session.refresh_token else None

    def read_info(self) -> Session | None:
        """Who is signed in (no keyring call: for status lines)."""
        data = read_state_file(self.path) if self.path else None
        return Session.parse(data) if data else None

    def write(self, session: Session, store: str | None = None) -> Session:
        """Store the refresh token in the keyring item (python-keyring replaces it) or in
        the file (renamed over the old one: atomic); then the file. ``store`` keeps the
        place chosen at sign-in (a refresh does not probe the keyring again)."""
        if not self.path:
            raise BackendError("no private state directory to keep the sign-in in")
        redact.remember(session.refresh_token)
        store = store or self._choose_store()
        if store == "keyring":
            self._keyring.set(KEYRING_SERVICE, self.ident, session.refresh_token)
        stored = replace(session, store=store)
        self.ensure_directory()
        write_state_file(self.path, stored.serialize())
        return stored

    def delete(self) -> bool:
        found = False
        info = self.read_info()
        if self.where != "file" and (info is None or info.store == "keyring"):
            with contextlib.suppress(BackendError, Skip):
                found = self._keyring.delete(KEYRING_SERVICE, self.ident) or found
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
                found = True
        return found

    def _choose_store(self) -> str:
        if self.where == "file":
            return "file"
        if self.where == "keyring":
            return "keyring"
        try:  # auto: the keyring when it answers in time, else the file
            self._keyring.get(KEYRING_SERVICE, self.ident)
            return "keyring"
        except (BackendError, Skip) as exc:
            log.debug("oidc: no usable OS keyring (%s); keeping the refresh token in %s",
                      exc, self.path)
            return "file"

    def ensure_directory(self) -> None:
        """Create the sign-in's directory 0700, or check the one there: a ``token_dir``
        chosen by hand may be shared, and files in a directory others can write can be
        swapped or removed under us."""
        if not self.directory:
            return  # no state directory: nothing is kept (write says so)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        problem = private_dir_problem(self.directory)
        if problem is not None:
            raise BackendError(f"cannot keep the sign-in in {self.directory}: {problem}")

    # --- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, across processes, until the run's deadline at most."""
        if not self.path:
            yield
            return
        self.ensure_directory()
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self.context.deadline - time.monotonic() <= 0:
                        raise DeadlineExceeded("another keyhelper process holds the sign-in's "
                                               "lock past the run's deadline") from None
                    time.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)  # releases the lock
