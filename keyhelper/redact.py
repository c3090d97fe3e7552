"""How text leaves the process: secrets named by fingerprint, never shown, and untrusted text
(a backend's error, a command's stderr, a plugin's exception) stripped of terminal control
sequences. Every line keyhelper prints on stderr goes through :func:`scrub`."""

from __future__ import annotations

from keyhelper.base.records import FINGERPRINT_DIGITS, MAX_KEY_CHARS, fingerprint

__all__ = ["FINGERPRINT_DIGITS", "MAX_KEY_CHARS", "fingerprint", "invalid_key_reason",
           "printable", "redact", "remember", "scrub"]

# Secrets seen by this process, so that any text leaving it can be scrubbed of them.
_known: set[str] = set()


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


def printable(text: str, *, newlines: bool = True) -> str:
    """``text`` safe to show on a terminal: escape sequences, carriage returns, bidi
    overrides and other non-printable characters become visible escapes (``\\x1b``);
    line breaks are kept only when ``newlines`` (a one-line reason must stay one line)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or (newlines and ch == "\n")
                   else ch.encode("unicode_escape").decode("ascii") for ch in text)


def scrub(text: str) -> str:
    """Redacted and printable: what may be written to stderr, a log or a report."""
    return printable(redact(text))


def invalid_key_reason(value: str) -> str | None:
    """Why Claude Code could not send ``value`` as an API key, or None if it can.

    Claude Code 2.1.332 rejects inner whitespace, line breaks, control and non-ASCII
    characters, so only printable ASCII without spaces passes.
    """
    if not value:
        return "the key is empty"
    if len(value) > MAX_KEY_CHARS:
        return (f"the key is {len(value)} characters long; Claude Code accepts at most "
                f"{MAX_KEY_CHARS}")
    for ch in value:
        if not "!" <= ch <= "~":
            kind = ("whitespace" if ch.isspace() else
                    "a control character" if ord(ch) < 32 or ord(ch) == 127 else
                    "a non-ASCII character")
            return f"the key contains {kind}, which Claude Code cannot send"
    return None
