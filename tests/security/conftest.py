"""The standing cross-user suite: every file and directory keyhelper reads or writes, attacked
by a real second local user (``kh-attacker``, created here if missing; CI runs as root).

For each place: pre-created by the other user, a symlink (to a file of ours and to one of
theirs), a hard link, a FIFO, a directory instead of a file, open to others, and what
keyhelper itself creates under umask 000 and 077 (a hard link does not apply to a
directory). Each must end in the documented safe behaviour (README "Security model and
threat model") well within the deadline: exit code and exact stderr, nothing on stdout on
failure, no planted value printed, nothing written through a link, no hang on a FIFO.

Covered here:
- test_xuser_cache.py: the cache directory, its parents, entries, locks, the route, served
  markers, the failure record and stale counter, the state directory, modes under umask.
- test_xuser_keyfiles.py: the ``file`` backend's key file (full path and hit path alike).
- test_xuser_vault.py (real OpenBao): Vault login tokens and KV mount memos in ``state/``,
  ``token_file``, ``~/.vault-token``, ``secret_id_file``, ``jwt_file``, the Kubernetes
  service-account token.

Hardened in parallel, with the account of tests/support/other_user.py:
- test_config_trust.py: the config file (owner and mode of the file and its directory),
- test_audit_trust.py: the audit log (type, owner, directory, FIFO),
- test_setup_trust.py: Claude Code's settings.json and its directory (``setup claude-code``),
- the administrator's policy file (/etc/keyhelper/policy.toml): with the rest of the policy's
  tests in tests/config/test_policy.py.

Also here: test_security.py (the security review, point by point) and test_fuzz.py (what
keyhelper reads, fuzzed).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from xuser import Attacker, Planter, ensure_user


@pytest.fixture(scope="session")
def attacker_account() -> tuple[str, int, int]:
    found = ensure_user()
    if isinstance(found, str):
        pytest.skip(f"no second local user: {found}")
    return found.pw_name, found.pw_uid, found.pw_gid


@pytest.fixture
def attacker(attacker_account: tuple[str, int, int]) -> Iterator[Attacker]:
    """The other user, with a sticky world-writable directory of its own to share (as /tmp:
    pytest's tmp_path is under a 0700 directory the other user cannot reach)."""
    shared = Path(tempfile.mkdtemp(prefix="kh-shared-", dir="/tmp"))
    shared.chmod(0o1777)
    try:
        yield Attacker(*attacker_account, shared=shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def planter(attacker: Attacker, tmp_path: Path) -> Planter:
    return Planter(attacker, tmp_path / "ours")


@pytest.fixture
def cache(cache_dir: Path) -> Path:
    """The cache directory, made by the user as keyhelper makes it, for planting into."""
    cache_dir.mkdir(mode=0o700)
    return cache_dir

