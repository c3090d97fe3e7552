"""Every test runs with its own HOME, config, cache and runtime directories, and without the
developer's keyhelper, Vault or Claude Code variables, so no test touches real files
(``isolated_env`` in keyhelper.testing.fixtures, the kit plugin authors use too).

Shared test code lives in tests/support and is imported as top-level modules
(``from helpers import keyhelper``): that folder goes on sys.path here, before the plugins
below are imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from helpers import SITECUSTOMIZE  # after the sys.path line above

# The isolated environment and write_config, then the real servers, each fixture module
# owned by its backend's tests. pytest allows pytest_plugins only in the rootdir's conftest.
pytest_plugins = ["keyhelper.testing.fixtures", "fixtures_openbao", "fixtures_keyring",
                  "fixtures_oidc", "fixtures_raft"]


@pytest.fixture
def hook(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "hook"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(site), "MODULES_OUT": str(tmp_path / "modules.txt")}
