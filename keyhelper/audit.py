"""Opt-in audit log of key issuance (filled in by the audit-log work)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def record(settings_raw: Mapping[str, Any], profile: str | None, result: Any,
           env: Mapping[str, str]) -> None:
    """Append one line per issuance when ``[audit]`` is configured. No-op for now."""
