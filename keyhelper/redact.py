"""How text leaves the process: secrets named by fingerprint, never shown, and untrusted text
(a backend's error, a command's stderr, a plugin's exception) stripped of terminal control
sequences. Every line keyhelper prints on stderr goes through :func:`scrub`, log lines
included: :func:`get_logger` gives loggers that cost nothing until a line is written, and
:func:`setup_logging` makes sure the ``logging`` module, whoever imports it, writes through
a redacting handler."""

from __future__ import annotations

import sys

from keyhelper.base.records import FINGERPRINT_DIGITS, MAX_KEY_CHARS, fingerprint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    ExcInfo = bool | BaseException  # as logging takes it: True, or the exception

__all__ = ["DEBUG", "ERROR", "FINGERPRINT_DIGITS", "INFO", "MAX_KEY_CHARS", "WARNING",
           "Logger", "fingerprint", "get_logger", "invalid_key_reason", "printable", "redact",
           "remember", "scrub", "setup_logging"]

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


# --- log lines ------------------------------------------------------------------------------
# The logging module costs ~20 ms to import here (threading, traceback, string, weakref ...),
# a quarter of a miss: it is imported only when a line is really written.

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # logging's levels
# Set by setup_logging (keyhelper's own commands); None: keyhelper is used as a library and
# the host's logging configuration decides.
_verbose: bool | None = None
# Where other loggers' lines go too under -v (the libraries the built-in backends use).
VERBOSE_LOGGERS = ("keyhelper_plugins", "hvac", "urllib3", "keyring")


class Logger:
    """``logging.getLogger(name)`` without importing logging until a line is written: under
    keyhelper's commands ``debug`` and ``info`` are a test and nothing more unless -v. The
    methods keyhelper uses of ``logging.Logger``, with its ``%`` arguments and ``exc_info``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Logger({self.name!r})"

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        if _verbose is not None:
            return level >= (DEBUG if _verbose else WARNING)
        if level >= WARNING:
            return True  # the host's logging decides; lastResort shows warnings
        logging = sys.modules.get("logging")  # not loaded: nothing could show the line
        return logging is not None and bool(logging.getLogger(self.name).isEnabledFor(level))

    def log(self, level: int, msg: str, *args: object, exc_info: ExcInfo = False) -> None:
        if self.isEnabledFor(level):
            import logging

            logging.getLogger(self.name).log(level, msg, *args, exc_info=exc_info)

    def debug(self, msg: str, *args: object, exc_info: ExcInfo = False) -> None:
        self.log(DEBUG, msg, *args, exc_info=exc_info)

    def info(self, msg: str, *args: object, exc_info: ExcInfo = False) -> None:
        self.log(INFO, msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object, exc_info: ExcInfo = False) -> None:
        self.log(WARNING, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: ExcInfo = False) -> None:
        self.log(ERROR, msg, *args, exc_info=exc_info)


def get_logger(name: str) -> Logger:
    """The logger of a module (``get_logger(__name__)``), for keyhelper and its plugins."""
    return Logger(name)


def setup_logging(verbose: bool) -> None:
    """For keyhelper's commands: log lines go to stderr, redacted, with debug lines under -v.

    Whoever imports ``logging`` (a Logger writing its first line, or a third-party plugin or
    library, at its top or inside a call), the redacting handler is in place before it can
    write a line: at once if it is loaded already (always under -v), else the moment its
    import finishes.
    """
    global _verbose
    _verbose = verbose
    if verbose:
        # Lines are wanted and the import's cost does not count: loaded now, so that code
        # writing a line only when "logging" is in sys.modules writes it too.
        import logging

        _install(logging)
        return
    loaded = sys.modules.get("logging")
    if loaded is not None:
        _install(loaded)
    elif not any(isinstance(finder, _WhenLoggingLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenLoggingLoads())


class _WhenLoggingLoads:
    """An import hook that finds nothing itself: it hands the import of ``logging`` to the
    finders after it, and installs the redacting handler once the module has run."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None and spec.loader is not None:
                spec.loader = _InstallAfter(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None


class _InstallAfter:
    """The loader of ``logging``, which installs the handler after the module has run."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader (linecache reads its source through it).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if _verbose is not None:
            _install(module)


def _install(logging: Any) -> None:
    """Send keyhelper's and its plugins' log lines to stderr through a redacting formatter,
    and make it Python's fallback for loggers without a handler of their own (a plugin's
    would otherwise print its warnings unredacted through ``logging.lastResort``)."""

    class RedactingFormatter(logging.Formatter):  # type: ignore[misc]
        """Scrubs every secret this process has seen from log lines, tracebacks included."""

        def format(self, record: Any) -> str:
            return scrub(super().format(record))

    verbose = bool(_verbose)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(
        "keyhelper: %(levelname)s %(name)s: %(message)s" if verbose else "keyhelper: %(message)s"))
    logging.lastResort = handler
    # The built-in plugins log as keyhelper_plugins.*: same handler, prefix and redaction.
    for root_name in ("keyhelper", "keyhelper_plugins"):
        root = logging.getLogger(root_name)
        root.handlers[:] = [handler]
        root.setLevel(DEBUG if verbose else WARNING)
        root.propagate = False
    if verbose:
        for name in VERBOSE_LOGGERS:
            other = logging.getLogger(name)
            other.handlers[:] = [handler]
            other.setLevel(DEBUG)
