"""The backend contract shared by built-in backends and third-party plugins.

A backend class declares its options, says cheaply whether it can run here
(:meth:`Backend.check_available`, no network), and implements :meth:`Backend.fetch`:

- return a :class:`Token`: the key (the first token of the chain wins);
- raise :class:`~keyhelper.errors.Skip`: "not configured here, try the next one";
- raise anything else (ideally :class:`~keyhelper.errors.BackendError`): "mine, but it broke".

Plugins register the class in the ``keyhelper.backends`` entry-point group.
"""

from __future__ import annotations

import abc
import os
import time

from keyhelper.base import records
from keyhelper.base.files import MISSING, home, read_user_file
from keyhelper.base.files import read_file_private as read_state_file
from keyhelper.base.files import safe_dir as private_dir_problem
from keyhelper.base.files import write_private as write_state_file
from keyhelper.errors import BackendError, ConfigError, DeadlineExceeded
from keyhelper.redact import fingerprint, get_logger

# Annotations only: typing, collections.abc and dataclasses cost ~20 ms to import on this
# kind of machine, a miss must not pay for them (tests/project/test_contract_imports.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, ClassVar, Literal, TypeVar

    T = TypeVar("T")
    # How private a user's file must be (keyhelper.base.files.read_user_file).
    Privacy = Literal["always", "own", "never"]
else:
    Privacy = str  # plugins import the name; only type checkers need the Literal

# What the built-in backends use from the core, offered to every plugin alike: the reader
# of key and credential files (the rules of SECURITY.md), private state files in
# ``Context.state_dir`` and the one record format for them (a directory of your own for
# them: :func:`private_dir_problem`), the user's home. (Also:
# :func:`login_name`, :func:`call_with_timeout` below, and keyhelper.oskeyring.OsKeyring.)
__all__ = ["AWS_REFRESH_MARGIN", "MISSING", "Backend", "Context", "Login", "Option", "Privacy",
           "Token", "aws_credentials", "call_with_timeout",
           "dump_record", "get_logger", "home", "load_record", "login_name", "option_fits",
           "private_dir_problem", "read_state_file", "read_user_file", "record_number",
           "wall_clock", "write_state_file"]

# The record format of every small state file (keyhelper.base.records): a header line
# naming the kind and its version, then one escaped ``name value`` line per field.
# dump_record(header, [(name, value), ...]) -> bytes; load_record(header, data,
# required=(...)) -> {name: value} or None when anything is off (a damaged file is absent);
# record_number(text) -> a finite float, ValueError otherwise.
dump_record = records.dump
load_record = records.load_unique
record_number = records.number


class _Record:
    """``==`` and ``repr`` over ``__slots__``, as ``@dataclass`` wrote them: dataclasses
    imports inspect, ast and dis (~12 ms here), which a miss must not pay for."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()  # in the constructor's order
    _hidden: ClassVar[tuple[str, ...]] = ()  # left out of repr (may hold a secret)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:  # and so __hash__ None, as dataclass's
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields
                          if name not in self._hidden)
        return f"{type(self).__qualname__}({shown})"


class _Frozen(_Record):
    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")  # frozen, as before

    __delattr__ = __setattr__  # type: ignore[assignment]

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # copy and pickle rebuild through the constructor: __setattr__ refuses.
        return type(self), self._values()


class Token(_Frozen):
    """A key and what is known about it. ``repr`` never shows the value."""

    _fields = ("value", "expires_at", "metadata")
    __slots__ = _fields
    value: str
    expires_at: float | None  # epoch seconds; None: unknown
    metadata: Mapping[str, str]

    def __init__(self, value: str, expires_at: float | None = None,
                 metadata: Mapping[str, str] | None = None):
        _set = object.__setattr__
        _set(self, "value", value)
        _set(self, "expires_at", expires_at)
        _set(self, "metadata", {} if metadata is None else metadata)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    def __repr__(self) -> str:
        return f"Token(fingerprint={self.fingerprint!r}, expires_at={self.expires_at!r})"


class Option(_Frozen):
    """One option of a backend: its type, default and help line, and the values it allows.

    ``choices``, ``min`` and ``max`` are checked when the configuration loads, wherever the
    backend sits in the chain, and shown in the generated docs. ``message`` replaces the
    generated "expected ..." text when a value is outside them; ``{value}`` in it is
    replaced by the value's repr.
    """

    _fields = ("types", "default", "required", "help", "item_type", "choices", "min", "max",
               "min_exclusive", "max_exclusive", "message")
    __slots__ = _fields
    types: type | tuple[type, ...]
    default: Any
    required: bool
    help: str
    item_type: type | None  # element type for list options, value type for tables
    choices: tuple[Any, ...] | None  # the only values allowed
    min: float | None  # lowest number allowed (excluded with min_exclusive)
    max: float | None  # highest number allowed (excluded with max_exclusive)
    min_exclusive: bool
    max_exclusive: bool
    message: str

    def __init__(self, types: type | tuple[type, ...], default: Any = None,
                 required: bool = False, help: str = "", item_type: type | None = None,
                 choices: tuple[Any, ...] | None = None, min: float | None = None,
                 max: float | None = None, min_exclusive: bool = False,
                 max_exclusive: bool = False, message: str = ""):
        values = (types, default, required, help, item_type, choices, min, max, min_exclusive,
                  max_exclusive, message)
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def describe_allowed(self) -> str:
        """What the value may be, e.g. ``"kv" or "logical"``, ``a number from 0 to below 1``
        (the words of scripts/gen-docs)."""
        if self.choices:
            # Strings as TOML writes them (json.dumps in scripts/gen-docs, but json stays
            # off the import path of a run).
            shown = [f'"{c}"' if isinstance(c, str) else _number(c) for c in self.choices]
            return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
        above = "above " if self.min_exclusive else ""
        below = "below " if self.max_exclusive else ""
        if self.min is not None and self.max is not None:
            bounds = f"from {above}{_number(self.min)} to {below}{_number(self.max)}"
        elif self.min is not None:
            bounds = f"{above or 'at least '}{_number(self.min)}"
        elif self.max is not None:
            bounds = f"{below or 'at most '}{_number(self.max)}"
        else:
            return self.describe_type()
        return f"{self.describe_type()} {bounds}"

    def value_problem(self, value: Any) -> str | None:
        """Why ``value`` (of the right type) is not among the choices or within the bounds."""
        if self.choices is not None:
            allowed = value in self.choices
        elif isinstance(value, int | float) and not isinstance(value, bool):
            allowed = not (
                (self.min is not None and (value < self.min
                                           or (self.min_exclusive and value == self.min)))
                or (self.max is not None and (value > self.max
                                              or (self.max_exclusive and value == self.max))))
        else:
            allowed = True
        if allowed:
            return None
        if self.message:
            return self.message.replace("{value}", repr(value))
        return f"expected {self.describe_allowed()}"

    def describe_type(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                 list: "a list", dict: "a table"}
        text = " or ".join(names.get(t, t.__name__) for t in types)
        if self.item_type is not None:
            plurals = {str: "strings", int: "integers", float: "numbers", bool: "booleans",
                       list: "lists", dict: "tables"}
            text += f" of {plurals.get(self.item_type, self.item_type.__name__)}"
        return text


class Context(_Record):
    """What a backend may use besides its options: time, environment, other backends."""

    _fields = ("profile", "env", "deadline", "state_dir", "fetch_other", "now", "interactive")
    __slots__ = (*_fields, "__dict__")  # __dict__: a plugin may hang its own state on it
    _hidden = ("env", "fetch_other")  # env may hold a key ($KEYHELPER_API_KEY)
    profile: str | None
    env: Mapping[str, str]
    deadline: float  # time.monotonic() value by which the whole run must end
    state_dir: str  # private 0700 directory for backend state (e.g. a Vault login token)
    # The token of another configured backend, by name (e.g. a signing key kept in Vault).
    fetch_other: Callable[[str], Token]
    now: Callable[[], float]
    # Whether a person can answer now (Claude Desktop's CLAUDE_HELPER_CONTEXT=interactive):
    # a backend may prompt or open a browser only then. The get path is never interactive.
    interactive: bool

    def __init__(self, profile: str | None, env: Mapping[str, str], deadline: float,
                 state_dir: str, fetch_other: Callable[[str], Token] | None = None,
                 now: Callable[[], float] | None = None, interactive: bool = False):
        self.profile = profile
        self.env = env
        self.deadline = deadline
        self.state_dir = state_dir
        self.fetch_other = fetch_other or (lambda name: _no_resolver(name))
        self.now = now or (lambda: wall_clock())
        self.interactive = interactive

    def remaining(self) -> float:
        """Seconds left before the run's deadline; raises when none are left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the run's deadline passed")
        return left

    def timeout(self, wanted: float) -> float:
        """A per-call timeout that never runs past the deadline."""
        return max(0.05, min(wanted, self.remaining()))


def wall_clock() -> float:
    """The one clock (epoch seconds). Looked up at each call, so freezegun can move it."""
    return time.time()


def _no_resolver(name: str) -> Token:
    raise ConfigError(f"backend {name!r} cannot be used from here")


class Login(_Record):
    """How ``keyhelper login`` asks a backend to sign a person in (never on the get path):
    ``say`` prints a line for the person (stderr), ``browser`` False prints the URL instead
    of opening it, ``device`` asks for the device flow, ``seconds`` bounds the wait."""

    _fields = ("say", "browser", "device", "seconds")
    __slots__ = _fields
    say: Callable[[str], None]
    browser: bool
    device: bool
    seconds: float

    def __init__(self, say: Callable[[str], None], browser: bool = True, device: bool = False,
                 seconds: float = 300.0):
        self.say = say
        self.browser = browser
        self.device = device
        self.seconds = seconds


class Backend(abc.ABC):
    """Base class of every backend. Subclasses set ``options`` and implement ``fetch``."""

    #: Options accepted in ``[backends.NAME]`` besides ``type``.
    options: ClassVar[Mapping[str, Option]] = {}
    #: False when the source is cheaper to read than a cache entry (env, file): its key is
    #: then never copied to the cache.
    cacheable: ClassVar[bool] = True
    #: One line for ``keyhelper backends``.
    summary: ClassVar[str] = ""

    def __init__(self, name: str, options: Mapping[str, Any], context: Context):
        self.name = name
        self.config = dict(options)
        self.context = context

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~keyhelper.errors.Unavailable` with the reason when unusable here.

        Must be cheap: no network, no slow imports beyond ``importlib.util.find_spec``.
        """

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        """Check ``options`` against :attr:`options`; return them with defaults filled in."""
        result: dict[str, Any] = {}
        for opt_name in options:
            if opt_name not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                raise ConfigError(f"unknown option (known: {known})", source=source,
                                  key=f"{key}.{opt_name}")
        for opt_name, spec in cls.options.items():
            if opt_name not in options:
                if spec.required:
                    raise ConfigError(f"missing; expected {spec.describe_type()}",
                                      source=source, key=f"{key}.{opt_name}")
                result[opt_name] = spec.default
                continue
            value = options[opt_name]
            problem = option_problem(value, spec, type_name(value))
            if problem is not None:
                where, message = problem
                raise ConfigError(message, source=source, key=f"{key}.{opt_name}{where}")
            result[opt_name] = float(value) if spec.types is float else value
        return result

    def watched_env(self) -> tuple[str, ...]:
        """Environment variables whose values change what ``fetch`` returns: their values
        are part of the cache key, so a change of one is a cache miss."""
        return ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Plugins written before watched_env() replaced the ``env_vars`` class attribute:
        # still key the cache on those variables (serving a key fetched under another
        # $AWS_PROFILE would be wrong), and say what to write instead.
        names = cls.__dict__.get("env_vars")
        if names is not None and "watched_env" not in cls.__dict__:
            import warnings

            warnings.warn(f"{cls.__qualname__}.env_vars is deprecated: define "
                          "watched_env(self) returning those names", DeprecationWarning,
                          stacklevel=2)
            frozen = tuple(names)
            cls.watched_env = lambda self: frozen  # type: ignore[method-assign]

    # --- optional sign-in hooks (``keyhelper login``/``logout``/``status``) -----------------

    def signs_in(self) -> bool:
        """True when this backend, as configured, has a person sign in (:meth:`login`)."""
        return False

    def login(self, request: Login) -> str:
        """Sign a person in; returns a line saying who. Asked only when :meth:`signs_in`."""
        raise ConfigError(f"backend {self.name!r} has no sign-in")

    def logout(self) -> str | None:
        """Forget (and revoke) the sign-in; a line saying what was done, None if nothing."""
        return None

    def session_status(self) -> str | None:
        """Who is signed in and until when (never a token); None when it has no sign-in."""
        return None

    @abc.abstractmethod
    def fetch(self) -> Token:
        """Return the key, raise ``Skip`` when not configured here, raise to fail."""


# Claude Code asks awsCredentialExport again 5 minutes before Expiration: credentials that
# close to it are no use to it, so they count as expired then (the cache drops them earlier).
AWS_REFRESH_MARGIN = 300.0


def aws_credentials(access_key_id: str, secret_access_key: str, session_token: str | None,
                    expiration: float) -> Token:
    """AWS credentials as a key: the compact document ``keyhelper aws-credentials`` prints
    (docs/hooks.md), ``Expiration`` (epoch seconds) written as AWS writes it."""
    from datetime import UTC, datetime

    from keyhelper.base.shapes import aws_key  # and its JSON writer: for AWS backends only

    when = datetime.fromtimestamp(int(expiration), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = {"AccessKeyId": access_key_id, "SecretAccessKey": secret_access_key,
              "SessionToken": session_token or "", "Expiration": when}
    for value in fields.values():
        if any(ch in value for ch in '",\\') or not value.isascii() or not value.isprintable():
            raise BackendError("the AWS credentials hold characters AWS never issues")
    return Token(aws_key(fields), int(expiration) - AWS_REFRESH_MARGIN)  # as printed


def option_fits(value: Any, spec: Option) -> bool:
    return option_problem(value, spec, "") is None


def type_name(value: Any) -> str:
    """A configuration value's type in the config file's words ("an integer", "a table")."""
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def option_problem(value: Any, spec: Option, got: str) -> tuple[str, str] | None:
    """Why ``value`` does not fit ``spec``, or None: (where inside the value, e.g. ".a[0]"
    or "", the message). ``got`` names the value's type in the caller's words."""
    if not _type_fits(value, spec):
        return "", f"expected {spec.describe_type()}, got {got}"
    found = non_finite(value)
    if found is not None:
        where, number = found
        return where, f"expected a finite number, got {number}"
    problem = spec.value_problem(value)
    return None if problem is None else ("", problem)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_fits(value: Any, spec: Option) -> bool:
    types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
    if isinstance(value, bool) and bool not in types:
        return False  # TOML booleans are ints to Python; never accept one as a number
    if float in types and isinstance(value, int):
        return True
    if not isinstance(value, types):
        return False
    if spec.item_type is not None:
        container: Any = value  # isinstance() above narrowed it to object
        items: Iterable[Any] = container.values() if isinstance(container, dict) else container
        return all(isinstance(item, spec.item_type) and not (
            isinstance(item, bool) and spec.item_type is not bool) for item in items)
    return True


_INFINITY = float("inf")  # math.isfinite without importing math


def non_finite(value: Any) -> tuple[str, float] | None:
    """The first inf or nan in ``value`` (lists and tables searched) and where it is.

    TOML allows them, yet no setting means anything with one (``ttl = nan`` would refetch
    forever, ``stale_grace = inf`` serve a stale key forever). A loop, not recursion:
    nesting depth is the file's to choose.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and (item != item or abs(item) == _INFINITY):  # nan, inf
            return where, item
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}", v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


# --- helpers for backends -------------------------------------------------------------------

# Variables the login name is read from: none where the OS can say whose the process is
# ($LOGNAME and $USER are whatever the caller set); %USERNAME% on Windows, which has no pwd.
LOGIN_VARS: tuple[str, ...] = ("USERNAME",) if os.name == "nt" else ()


def login_name(env: Mapping[str, str]) -> str | None:
    """The login name of the account the process runs as (its uid), never $LOGNAME or $USER;
    on Windows %USERNAME% of the run's environment, as getpass.getuser() reads it there.
    None for a uid without an account (a container's)."""
    if os.name == "nt":
        return env.get("USERNAME") or None
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None



def call_with_timeout(fn: Callable[[], T], seconds: float,
                      stalled: Callable[[], BaseException], name: str = "keyhelper-call") -> T:
    """Run ``fn`` in a daemon thread; raise ``stalled()`` if it has not returned in time.

    For calls that cannot be given a timeout of their own (a stalled D-Bus call, a plugin
    without timeouts): the thread is abandoned, and a daemon thread does not keep the
    process alive, so the run still ends in time. (``name`` is kept for callers: a thread
    started through _thread has none.)
    """
    # _thread, not threading (with the functools and collections it imports, ~0.6 x an
    # empty interpreter's start here, on every miss): a thread started with it is never
    # waited for at exit, as a daemon thread. (A plugin importing threading inside fn is
    # a case threading handles: its "main thread" is then this one, bpo-1596321.)
    import _thread

    outcome: dict[str, Any] = {}
    done = _thread.allocate_lock()
    done.acquire()

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.release()

    _thread.start_new_thread(target, ())
    if not done.acquire(timeout=max(0.0, min(seconds, _thread.TIMEOUT_MAX))):
        raise stalled()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
