"""A contract test kit for backend authors (see README, "Writing a backend plugin").

Needs pytest. Subclass :class:`BackendContract` (and :class:`SkipContract`,
:class:`FailureContract`, :class:`DeadlineContract` where they apply) in your plugin's tests.
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
