"""JSON text for the hit path, without the ``json`` module (8 ms to import, mostly ``re``).

:func:`string` writes exactly what ``json.dumps(text)`` writes (ASCII, the same escapes), and
:func:`obj` a flat or nested object of strings as ``json.dumps(obj, separators=(",", ":"))``.
tests/base/test_jsontext.py holds both to the json module with hypothesis.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Value = str | Iterable[tuple[str, "Value"]]

_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
          "\t": "\\t"}


def _escape(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    n = ord(ch)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # a surrogate pair, as JSON writes a character beyond the BMP
    return f"\\u{0xD800 | (n >> 10):04x}\\u{0xDC00 | (n & 0x3FF):04x}"


def string(text: str) -> str:
    """``text`` as a JSON string literal: printable ASCII as is, all else escaped."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'  # the common case (keys, header names), without a loop
    return '"' + "".join(ch if " " <= ch <= "~" and ch not in '"\\' else _escape(ch)
                         for ch in text) + '"'


def obj(pairs: "Iterable[tuple[str, Value]]") -> str:
    """An object of string (or nested object) values, compact, in the order given."""
    parts = []
    for name, value in pairs:
        parts.append(string(name) + ":" + (string(value) if isinstance(value, str)
                                           else obj(value)))
    return "{" + ",".join(parts) + "}"
