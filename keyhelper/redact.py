"""Fingerprints and redaction: how a secret is named without being shown."""

from __future__ import annotations

import hashlib

# Secrets seen by this process, so that any text leaving it can be scrubbed of them.
_known: set[str] = set()

FINGERPRINT_DIGITS = 12


def fingerprint(secret: str) -> str:
    """First 12 hex digits of the secret's sha256: safe to show, log and compare."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:FINGERPRINT_DIGITS]


def remember(secret: str) -> None:
    """Mark a value as secret, so that :func:`redact` hides it from now on."""
    if len(secret) >= 4:  # shorter values would blank out ordinary words
        _known.add(secret)


def redact(text: str) -> str:
    """Replace every known secret in ``text`` by its fingerprint."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, f"<{fingerprint(secret)}>")
    return text


def invalid_key_reason(value: str) -> str | None:
    """Why Claude Code could not send ``value`` as an API key, or None if it can.

    Claude Code 2.1.332 rejects inner whitespace, line breaks, control and non-ASCII
    characters, so only printable ASCII without spaces passes.
    """
    if not value:
        return "the key is empty"
    for ch in value:
        if not "!" <= ch <= "~":
            kind = ("whitespace" if ch.isspace() else
                    "a control character" if ord(ch) < 32 or ord(ch) == 127 else
                    "a non-ASCII character")
            return f"the key contains {kind}, which Claude Code cannot send"
    return None
