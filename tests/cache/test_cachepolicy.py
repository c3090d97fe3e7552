"""The cache policy in-process, without subprocesses (issue 11): every rule of
keyhelper/cachepolicy.py and the miss flow of CachedFetcher, on an in-memory store, a
hand-moved clock, and a fake chain (a callable counting its calls). The same rules run
end to end in test_cache.py, test_claude_loop.py and test_concurrency.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyhelper import cachepolicy
from keyhelper.base.records import Entry, env_digest, read_marker
from keyhelper.cachepolicy.fetcher import CachedFetcher, Fetched, Rules
from keyhelper.errors import Attempt, BackedOff, NoKeyError

ENV = {"VAULT_ADDR": "https://vault:8200"}
NAMES = ["VAULT_ADDR"]


class Memory:
    """A store in a dict (the Store protocol)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def read(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def write(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry

    def describe(self, key: str) -> str:
        return f"memory:{key}"


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Chain:
    """A fake chain: key-1, key-2 ... or a failure when ``failing``."""

    def __init__(self, expires_at: float | None = None):
        self.calls = 0
        self.failing = False
        self.expires_at = expires_at

    def __call__(self) -> Fetched:
        self.calls += 1
        if self.failing:
            raise NoKeyError([Attempt("src", "failed", "down", 0.0)])
        return Fetched(f"key-{self.calls}", self.expires_at, "src", True, [])


@contextlib.contextmanager
def no_lock() -> Iterator[None]:
    yield


def fetcher(tmp_path: Path, store: Memory, clock: Clock, *, caller: str | None = None,
            ttl: float = 300.0, grace: float = 3600.0) -> CachedFetcher:
    rules = Rules(ttl, 0.2, grace, True, {})
    return CachedFetcher(store, str(tmp_path), "k", rules, ENV, now=clock, lock=no_lock,
                         caller=caller, report=lambda level, message: None)


def test_a_fresh_entry_is_served_without_calling_the_chain(tmp_path: Path) -> None:
    store, clock, chain = Memory(), Clock(), Chain()
    first = fetcher(tmp_path, store, clock).get(chain, NAMES)
    clock.now += 299
    second = fetcher(tmp_path, store, clock).get(chain, NAMES)
    assert (first.source, first.value, second.source, second.value) == (
        "fetched", "key-1", "hit", "key-1")
    assert chain.calls == 1


def test_an_expired_entry_or_another_environment_is_fetched_anew(tmp_path: Path) -> None:
    store, clock, chain = Memory(), Clock(), Chain()
    fetcher(tmp_path, store, clock).get(chain, NAMES)
    clock.now += 300
    assert fetcher(tmp_path, store, clock).get(chain, NAMES).value == "key-2"
    assert not cachepolicy.fresh(store.read("k"), {"VAULT_ADDR": "other"}, clock.now)


def test_a_key_near_its_own_expiry_is_cached_up_to_the_margin_only(tmp_path: Path) -> None:
    store, clock = Memory(), Clock()
    chain = Chain(expires_at=clock.now + 100)
    fetcher(tmp_path, store, clock).get(chain, NAMES)
    entry = store.read("k")
    assert entry is not None and entry.expires == clock.now + 100 - cachepolicy.EXPIRY_MARGIN
    short = Chain(expires_at=clock.now + cachepolicy.EXPIRY_MARGIN)
    outcome = fetcher(tmp_path, Memory(), clock).get(short, NAMES)
    assert outcome.source == "uncached"


def test_refresh_ahead_in_the_last_fifth_of_the_life(tmp_path: Path) -> None:
    store, clock = Memory(), Clock()
    fetcher(tmp_path, store, clock).get(Chain(), NAMES)
    entry = store.read("k")
    assert entry is not None
    assert not cachepolicy.refresh_due(entry, clock.now + 239)
    assert cachepolicy.refresh_due(entry, clock.now + 240)


def test_a_repeat_call_from_the_same_claude_process_fetches_anew_rate_limited(
        tmp_path: Path) -> None:
    store, clock, chain = Memory(), Clock(), Chain()
    assert fetcher(tmp_path, store, clock, caller="42-7").get(chain, NAMES).value == "key-1"
    clock.now += 10  # well inside Claude Code's 300 s TTL: its key was refused
    rotated = fetcher(tmp_path, store, clock, caller="42-7").get(chain, NAMES)
    assert (rotated.source, rotated.value) == ("rotated", "key-2")
    clock.now += 1  # refused again at once: the backend has not caught up
    again = fetcher(tmp_path, store, clock, caller="42-7").get(chain, NAMES)
    assert (again.source, again.value, chain.calls) == ("hit", "key-2", 2)
    clock.now += cachepolicy.REFETCH_INTERVAL
    assert fetcher(tmp_path, store, clock, caller="42-7").get(chain, NAMES).value == "key-3"
    # Another Claude Code process is a plain hit.
    assert fetcher(tmp_path, store, clock, caller="99-1").get(chain, NAMES).source == "hit"
    assert read_marker(str(tmp_path / "k.99-1.served")) is not None


@pytest.mark.parametrize(("ttl_ms", "window"), [(None, 270.0), ("60000", 54.0)])
def test_the_repeat_window_follows_claude_codes_own_ttl(ttl_ms: str | None,
                                                         window: float) -> None:
    env = {} if ttl_ms is None else {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": ttl_ms}
    entry = Entry("k", "src", 10.0, 10_000.0, 9_000.0, None, [], env_digest([], env))
    assert cachepolicy.rejected(entry, (10.0, 100.0), env, 100.0 + window - 0.01)
    assert not cachepolicy.rejected(entry, (10.0, 100.0), env, 100.0 + window)
    assert not cachepolicy.rejected(entry, (11.0, 100.0), env, 101.0)  # another entry


def test_stale_if_error_within_the_grace_never_past_the_keys_expiry(tmp_path: Path) -> None:
    store, clock, chain = Memory(), Clock(), Chain(expires_at=1_000_000.0 + 7200)
    fetcher(tmp_path, store, clock, grace=600).get(chain, NAMES)
    chain.failing = True
    clock.now += 300 + 599
    stale = fetcher(tmp_path, store, clock, grace=600).get(chain, NAMES)
    assert (stale.source, stale.value) == ("stale", "key-1")
    clock.now += 2  # past the grace (and the backoff that the failure started)
    with pytest.raises(NoKeyError):
        fetcher(tmp_path, store, clock, grace=600).get(chain, NAMES)
    entry = store.read("k")
    assert entry is not None
    assert not cachepolicy.stale_servable(entry, NAMES, ENV, 1_000_000.0 + 7200, 1e9)


def test_a_failure_backs_off_for_every_process_then_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cachepolicy, "BACKOFF_JITTER", 0.0)
    clock, chain = Clock(), Chain()
    chain.failing = True
    with pytest.raises(NoKeyError) as first:
        fetcher(tmp_path, Memory(), clock).get(chain, NAMES)
    assert not isinstance(first.value, BackedOff)
    clock.now += 1.9  # within the first backoff (2 s): the chain is not called
    with pytest.raises(BackedOff) as waiting:
        fetcher(tmp_path, Memory(), clock).get(chain, NAMES)
    assert waiting.value.describe().endswith(
        "(failed 2 s ago; retried in 0 s; `keyhelper cache clear` retries now)")
    assert chain.calls == 1
    clock.now += 0.1
    chain.failing = False
    assert fetcher(tmp_path, Memory(), clock).get(chain, NAMES).value == "key-2"
    assert [cachepolicy.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]


def test_the_backoff_is_stretched_at_random_by_up_to_half() -> None:
    delays = [cachepolicy.retry_delay(5) for _ in range(200)]
    assert all(30 <= d <= 45 for d in delays)
    assert max(delays) - min(delays) > 10  # spread, not one instant for every machine


def test_a_served_marker_from_the_future_is_not_a_repeat_call() -> None:
    entry = Entry("k", "src", 10.0, 10_000.0, 9_000.0, None, [], env_digest([], {}))
    assert not cachepolicy.rejected(entry, (10.0, 100.0 + 2 * 86400), {}, 100.0)


def test_an_entry_from_the_future_is_not_fresh_nor_stale_servable() -> None:
    now = 1_000_000.0
    entry = Entry("k", "src", now + 86400, now + 86700, now + 86640, None, NAMES,
                  env_digest(NAMES, ENV))
    assert not cachepolicy.fresh(entry, ENV, now, NAMES)
    assert not cachepolicy.stale_servable(entry, NAMES, ENV, now, 3600)


def test_a_failure_from_the_future_is_forgotten(tmp_path: Path) -> None:
    """Recorded with the clock two days ahead, then back at the right time: retried."""
    clock, chain = Clock(), Chain()
    chain.failing = True
    real = clock.now
    clock.now += 2 * 86400
    with pytest.raises(NoKeyError):
        fetcher(tmp_path, Memory(), clock).get(chain, NAMES)
    clock.now = real
    chain.failing = False
    assert fetcher(tmp_path, Memory(), clock).get(chain, NAMES).value == "key-2"
    assert not cachepolicy.backed_off(real + 6, real + 8, real)  # beyond the skew
    assert cachepolicy.backed_off(real + 4, real + 6, real)  # within it
    assert not cachepolicy.backed_off(real, real + 3600, real)  # longer than any backoff


def test_a_background_refresh_does_nothing_if_someone_refreshed(tmp_path: Path) -> None:
    store, clock, chain = Memory(), Clock(), Chain()
    fetcher(tmp_path, store, clock).get(chain, NAMES)
    entry = store.read("k")
    assert entry is not None
    assert fetcher(tmp_path, store, clock).refresh(chain, NAMES, entry.stored - 1) is None
    refreshed = fetcher(tmp_path, store, clock).refresh(chain, NAMES, entry.stored)
    assert refreshed is not None and (refreshed.source, refreshed.value) == ("refresh", "key-2")
