"""Token, Option, Context, Login and Attempt are plain classes now (dataclasses costs ~12 ms
to import, issue 16): they still compare by value, print as before, refuse assignment where
they were frozen, and can be copied (copy and pickle rebuild them the same way)."""

from __future__ import annotations

import copy

import pytest

from keyhelper.backend import Context, Login, Option, Token
from keyhelper.errors import Attempt

KEY = "sk-ant-Records_0123456789abcdef"


def test_token() -> None:
    token = Token(KEY, 12.5, {"source": "x"})
    assert token == Token(KEY, 12.5, {"source": "x"}) and token != Token(KEY, 12.5)
    assert Token(KEY).metadata == {} and Token(KEY).expires_at is None
    assert Token(value=KEY, metadata={"a": "b"}).metadata == {"a": "b"}
    assert repr(token) == f"Token(fingerprint={token.fingerprint!r}, expires_at=12.5)"
    assert KEY not in repr(token) + str(token)
    with pytest.raises(AttributeError):
        token.value = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):  # its metadata is a dict, as with the dataclass
        hash(token)
    assert hash(Token(KEY, None, ())) == hash(Token(KEY, None, ()))  # type: ignore[arg-type]
    for clone in (copy.copy(token), copy.deepcopy(token)):
        assert clone == token and clone.value == KEY


def test_option() -> None:
    option = Option(float, 10.0, help="seconds", min=0, min_exclusive=True)
    assert option == Option(float, 10.0, help="seconds", min=0, min_exclusive=True)
    assert option != Option(float, 10.0, help="seconds")
    assert repr(Option(str, "x")) == (
        "Option(types=<class 'str'>, default='x', required=False, help='', item_type=None, "
        "choices=None, min=None, max=None, min_exclusive=False, max_exclusive=False, "
        "message='')")
    assert hash(option) == hash(copy.copy(option))
    with pytest.raises(AttributeError):
        option.default = 1.0  # type: ignore[misc]
    assert copy.deepcopy(option) == option


def test_context_and_login() -> None:
    context = Context("work", {"KEYHELPER_API_KEY": KEY}, 5.0, "/state")
    assert repr(context).startswith("Context(profile='work', deadline=5.0, state_dir='/state', ")
    assert KEY not in repr(context)
    assert context == Context("work", {"KEYHELPER_API_KEY": KEY}, 5.0, "/state",
                              context.fetch_other, context.now)
    context.deadline = 9.0  # not frozen, as before
    context.plugin_state = 1  # type: ignore[attr-defined]  # a plugin's own attribute
    assert context.interactive is False and context.now() > 0
    say = print
    assert Login(say) == Login(say, True, False, 300.0)
    assert repr(Login(say, device=True)) == (
        "Login(say=<built-in function print>, browser=True, device=True, seconds=300.0)")


def test_attempt() -> None:
    attempt = Attempt("env", "failed", "down", 0.5)
    assert attempt == Attempt("env", "failed", "down", 0.5) != Attempt("env", "ok", "", 0.5)
    assert repr(attempt) == "Attempt(backend='env', outcome='failed', reason='down', seconds=0.5)"
    assert hash(attempt) == hash(copy.deepcopy(attempt))
    with pytest.raises(AttributeError):
        attempt.reason = "x"  # type: ignore[misc]
