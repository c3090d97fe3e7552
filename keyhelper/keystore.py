"""``keyhelper set`` and ``delete``: store or remove the key of a keyring backend, and drop
the cache entries it replaces. The key comes from a prompt or stdin, never argv."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from keyhelper import redact
from keyhelper.base.files import Selection
from keyhelper.base.records import entry_key
from keyhelper.errors import EXIT_OK, BackendError, UsageError
from keyhelper.resolver import Run
from keyhelper.stores import FileCache

KEYRING_TYPE = "keyring"
Echo = Callable[[str], None]


@runtime_checkable
class WritableBackend(Protocol):
    """A backend that can store and delete its key (the keyring backend)."""

    name: str

    def where(self) -> str: ...

    def keyring_name(self) -> str: ...

    def store(self, value: str) -> None: ...

    def delete(self) -> bool: ...


def set_key(selection: Selection, env: Mapping[str, str], read_key: Callable[[], str],
            echo: Echo) -> int:
    """``keyhelper set``: read a key (prompt or stdin, never argv), check it, store it in the
    selected keyring backend, and drop the cache entries it replaces."""
    run, backend = writable_backend(selection, env)
    value = read_key()
    redact.remember(value)
    reason = redact.invalid_key_reason(value)
    if reason is not None:
        raise UsageError(f"refused: {reason}; nothing stored")
    # The prompt may have taken a while: the keyring calls get the run's full deadline.
    run.context.deadline = time.monotonic() + float(run.settings.setting("deadline"))
    backend.store(value)
    cleared = clear_cached(run, selection, env, backend.name)
    echo(f"keyhelper: stored {redact.fingerprint(value)} in {backend.name} ({backend.where()}, "
         f"{backend.keyring_name()}); {_entries(cleared)} cleared from the cache")
    return EXIT_OK


def delete_key(selection: Selection, env: Mapping[str, str], echo: Echo) -> int:
    """``keyhelper delete``: remove the key from the selected keyring backend."""
    run, backend = writable_backend(selection, env)
    found = backend.delete()
    cleared = clear_cached(run, selection, env, backend.name)
    if not found:
        raise BackendError(f"no key stored for {backend.where()}; nothing deleted "
                           f"({_entries(cleared)} cleared from the cache)", backend=backend.name)
    echo(f"keyhelper: deleted the key of {backend.where()} from {backend.name} "
         f"({backend.keyring_name()}); {_entries(cleared)} cleared from the cache")
    return EXIT_OK


def writable_backend(selection: Selection,
                     env: Mapping[str, str]) -> tuple[Run, WritableBackend]:
    """The backend to write: ``--backend NAME``, else the chain's first keyring-type backend,
    else the built-in ``keyring`` with its configured or default options."""
    run = Run(selection, env)
    settings = run.settings
    if len(selection.backends) > 1:
        raise UsageError("give one --backend to store in")
    if selection.backends:
        spec = settings.spec(selection.backends[0])
    else:
        spec = next((s for s in settings.chain if s.type == KEYRING_TYPE),
                    None) or settings.spec(KEYRING_TYPE)
    backend = run.chain.build(spec)
    if not isinstance(backend, WritableBackend):
        raise UsageError(f"backend {spec.name!r} is of type {spec.type!r}; keyhelper set and "
                         "delete work with keyring-type backends only")
    return run, backend


def clear_cached(run: Run, selection: Selection, env: Mapping[str, str],
                 backend_name: str) -> int:
    """Drop cache entries that may hold the old key: this selection's, the plain chain's,
    and every file entry that came from this backend. Returns how many were removed."""
    store = run.cache_store()
    if store is None:
        return 0
    plain = Selection((), selection.profile, selection.config)
    keys = {run.key, entry_key(plain, env)}
    if isinstance(store, FileCache):
        for key in store.keys():  # noqa: SIM118 - a method of FileCache, not a dict
            entry = store.read(key)
            if entry is not None and entry.backend == backend_name:
                keys.add(key)
    return sum(store.delete(key) for key in sorted(keys))


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"
