"""A contract test kit for backend authors (see README, "Writing a backend plugin").

Needs pytest. Subclass :class:`BackendContract` (and :class:`SkipContract`,
:class:`FailureContract`, :class:`DeadlineContract` where they apply) in your plugin's tests.

The isolated environment (``isolated_env``, ``write_config``) is a pytest plugin module of
its own, ``keyhelper.testing.fixtures``: list it in ``pytest_plugins`` (not imported here, so
that importing the contract kit registers no autouse fixture).
"""

from keyhelper.testing.backend import (
    HEAVY_MODULES,
    BackendContract,
    DeadlineContract,
    FailureContract,
    Setup,
    SkipContract,
    exact_environ,
)

__all__ = ["HEAVY_MODULES", "BackendContract", "DeadlineContract", "FailureContract", "Setup",
           "SkipContract", "exact_environ"]
