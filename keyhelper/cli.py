"""The command line for people: doctor, backends, cache, and the rest.

A thin layer: it parses arguments, calls the core, prints. The plain get
(``keyhelper [selection options]``) is served by ``keyhelper._entry`` before click is even
imported; click sees it only for ``--help`` and for usage errors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from keyhelper import __version__, redact
from keyhelper.app import guarded, run_get, setup_logging
from keyhelper.base.files import MAX_FILE_BYTES, Selection
from keyhelper.base.records import entry_key
from keyhelper.errors import EXIT_OK

F = Callable[..., Any]
HIDDEN = "<hidden>"


class KeyhelperGroup(click.Group):
    """Never echoes an argument it does not know in a usage error: a key pasted on the
    command line by mistake would land in Claude Code's error line, scrollback and logs."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with hide_unknown(self, args):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with hide_unknown(self, [*ctx.protected_args, *ctx.args]):
            return super().invoke(ctx)


@contextlib.contextmanager
def hide_unknown(group: click.Group, args: list[str]) -> Iterator[None]:
    argv = list(args)  # a copy: click's parser consumes the list it is given
    try:
        yield
    except click.UsageError as exc:
        message = hide_arguments(exc.format_message(), argv, known_words(group))
        raise click.UsageError(message, exc.ctx) from None


def hide_arguments(message: str, argv: list[str], known: set[str]) -> str:
    """``message`` with every argument that is not a command, option or choice replaced."""
    words = {part for arg in argv for part in arg.split("=", 1)}
    for word in sorted(words - known, key=len, reverse=True):
        if len(word) >= 3:  # shorter ones cannot be a key, and would mangle the text
            message = message.replace(word, HIDDEN)
    return message


def known_words(command: click.Command) -> set[str]:
    """Names of the commands, options and choices of ``command`` and its subcommands."""
    words = {command.name or ""}
    for param in command.params:
        words.update(param.opts, param.secondary_opts)
        if isinstance(param.type, click.Choice):
            words.update(str(choice) for choice in param.type.choices)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            words |= known_words(sub)
    return words


def complete_profiles(ctx: click.Context, param: click.Parameter,
                      incomplete: str) -> list[str]:
    """Shell completion: the profiles of the config file (none if it cannot be read)."""
    raw = _config_for_completion(ctx)
    return sorted(p for p in raw.get("profiles", {}) if p.startswith(incomplete))


def complete_backends(ctx: click.Context, param: click.Parameter,
                      incomplete: str) -> list[str]:
    """Shell completion: configured backend names and installed backend types."""
    from keyhelper.registry import Registry

    names = set(_config_for_completion(ctx).get("backends", {}))
    with contextlib.suppress(Exception):  # completion must never print an error
        names.update(Registry(allow=[]).names())
    return sorted(n for n in names if n.startswith(incomplete))


def _config_for_completion(ctx: click.Context) -> dict[str, Any]:
    from keyhelper import config

    try:
        selection = Selection(config=ctx.params.get("config"))
        return dict(config.load(selection, os.environ).raw)
    except Exception:  # an unreadable config: nothing to offer
        return {}


def selection_options(fn: F) -> F:
    """--backend/--profile/--config/--no-cache/-v, shared by every command that picks a chain,
    handed to the command as one ``selection`` argument."""
    @functools.wraps(fn)
    def with_selection(*args: Any, backends: tuple[str, ...], profile: str | None,
                       config: str | None, no_cache: bool, verbose: bool, **kwargs: Any) -> Any:
        selection = Selection(backends, profile, config, no_cache, verbose)
        return fn(*args, selection=selection, **kwargs)

    decorators = [
        click.option("-b", "--backend", "backends", multiple=True, metavar="NAME",
                     help="Backend to try, in order (repeatable). A name from the config "
                          "file, or a backend type with its defaults.",
                     shell_complete=complete_backends),
        click.option("-p", "--profile", metavar="NAME", help="Profile from the config file.",
                     shell_complete=complete_profiles),
        click.option("-c", "--config", metavar="PATH", help="Config file (TOML).",
                     type=click.Path()),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the cache."),
        click.option("-v", "--verbose", is_flag=True, help="Debug output on stderr."),
    ]
    wrapped: F = with_selection
    for decorator in reversed(decorators):
        wrapped = decorator(wrapped)
    return wrapped


def say(message: str) -> None:
    """Print a line for people on stdout: every report goes through here, escaped."""
    click.echo(redact.scrub(message))


def warn(message: str) -> None:
    click.echo(redact.scrub(message), err=True)


def run(verbose: bool, action: Callable[[], int]) -> None:
    """Set up logging, run the action through the single error handler, exit."""
    setup_logging(verbose)
    sys.exit(guarded(verbose, action))


@click.group(cls=KeyhelperGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@selection_options
@click.version_option(__version__, prog_name="keyhelper")
@click.pass_context
def main(ctx: click.Context, selection: Selection) -> None:
    """Print one API key for Claude Code's apiKeyHelper, from a chain of backends,
    cached across processes.

    \b
    Exit codes: 0 key printed; 1 no key; 2 usage or configuration error.
    """
    if ctx.invoked_subcommand is None:
        sys.exit(run_get(selection))
    if (selection.backends or selection.profile or selection.config or selection.no_cache
            or selection.verbose):
        # Silently ignoring them would run the subcommand on another chain than asked.
        raise click.UsageError(f"selection options go after the command: keyhelper "
                               f"{ctx.invoked_subcommand} --config ... / --backend ...")


@main.command()
@selection_options
def doctor(selection: Selection) -> None:
    """Run every backend of the chain and report what each did (never the key)."""
    from keyhelper import diagnose

    run(selection.verbose, lambda: diagnose.doctor(selection, os.environ, say))


@main.command("backends")
@click.option("-v", "--verbose", is_flag=True, help="Debug output on stderr.")
def list_backends(verbose: bool) -> None:
    """List the backend types installed, built-in and plugins, and whether each is usable."""
    from keyhelper import diagnose

    run(verbose, lambda: diagnose.list_backends(os.environ, say))


@main.command("jwks")
@selection_options
def jwks_command(selection: Selection) -> None:
    """Print the public JWKS (JSON) of the selected jwt backend's signing key."""
    from keyhelper import jwks

    run(selection.verbose, lambda: jwks.print_jwks(selection, os.environ, say))


@main.group(cls=KeyhelperGroup)
def setup() -> None:
    """Configure a client to use keyhelper."""


@setup.command("claude-code")
@selection_options
@click.option("--scope", type=click.Choice(["user", "project"]), default="user",
              show_default=True, help="~/.claude/settings.json or ./.claude/settings.json.")
@click.option("--ttl-ms", type=click.IntRange(min=1000), metavar="MS",
              help="Also set env.CLAUDE_CODE_API_KEY_HELPER_TTL_MS.")
@click.option("--dry-run", is_flag=True, help="Show the change; write nothing.")
def setup_claude_code(selection: Selection, scope: str, ttl_ms: int | None,
                      dry_run: bool) -> None:
    """Write apiKeyHelper (this keyhelper's absolute path) into Claude Code's settings,
    merging with what is there and keeping a backup. Idempotent."""
    from keyhelper.setup_claude import setup as do_setup

    run(selection.verbose, lambda: do_setup(
        scope=scope, profile=selection.profile, config=selection.config,
        backends=selection.backends, ttl_ms=ttl_ms, dry_run=dry_run, echo=say, warn=warn))


@main.command("set")
@selection_options
@click.argument("argv_key", nargs=-1, metavar="")
def set_command(selection: Selection, argv_key: tuple[str, ...]) -> None:
    """Store a key in the OS keyring: typed at a hidden prompt, or piped on stdin (never
    an argument). --backend NAME picks the keyring backend (default: the chain's first)."""
    from keyhelper.errors import UsageError
    from keyhelper.keystore import set_key

    def action() -> int:
        if argv_key:  # refused without echoing it: argv shows in ps and shell history
            raise UsageError("set takes no key argument (ps and shell history would show "
                             "it): pipe it on stdin, or type it at the prompt")
        return set_key(selection, os.environ, read_new_key, warn)

    run(selection.verbose, action)


@main.command("delete")
@selection_options
def delete_command(selection: Selection) -> None:
    """Delete the key from the OS keyring (the backend `keyhelper set` would write)."""
    from keyhelper.keystore import delete_key

    run(selection.verbose, lambda: delete_key(selection, os.environ, warn))


def read_new_key() -> str:
    """A hidden, confirmed prompt on a terminal; else stdin (a pipe). Never argv."""
    from keyhelper.errors import UsageError

    if sys.stdin.isatty():
        try:
            return str(click.prompt("API key", hide_input=True, confirmation_prompt=True,
                                    err=True)).strip()
        except click.Abort:  # Ctrl-C or Ctrl-D at the prompt
            raise KeyboardInterrupt from None
    text = sys.stdin.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise UsageError("the key on stdin is longer than 64 KiB; nothing stored")
    return text.strip()


@main.command("login")
@selection_options
@click.option("--device", is_flag=True, help="The device flow: a code to enter on another "
                                             "device (SSH sessions, headless machines).")
@click.option("--no-browser", is_flag=True, help="Print the sign-in URL; open no browser.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              metavar="SECONDS", help="How long to wait for the sign-in.")
def login_command(selection: Selection, device: bool, no_browser: bool, timeout: float) -> None:
    """Sign in to the selection's identity provider (oidc, vault with auth = "oidc")."""
    from keyhelper import signin

    run(selection.verbose, lambda: signin.login(selection, os.environ, say, warn,
                                                browser=not no_browser, device=device,
                                                seconds=timeout))


@main.command("logout")
@selection_options
def logout_command(selection: Selection) -> None:
    """Revoke and delete the selection's stored sign-in, and its cached key."""
    from keyhelper import signin

    run(selection.verbose, lambda: signin.logout(selection, os.environ, say))


@main.command("status")
@selection_options
def status_command(selection: Selection) -> None:
    """Who is signed in, and until when (never a token). Exit 1 when signed out."""
    from keyhelper import signin

    run(selection.verbose, lambda: signin.status(selection, os.environ, say))


@main.group(cls=KeyhelperGroup)
def cache() -> None:
    """Inspect or clear the key cache."""


@cache.command("status")
@click.option("-v", "--verbose", is_flag=True, help="Debug output on stderr.")
def cache_status(verbose: bool) -> None:
    """List cache entries: backend, fingerprint, time left. Never the key."""
    from keyhelper.redact import fingerprint
    from keyhelper.stores import FileCache

    def action() -> int:
        store = FileCache.open(os.environ)
        say(f"cache directory: {store.directory}")
        now = time.time()
        keys = store.keys()
        if not keys:
            say("no entries")
        for key in keys:
            entry = store.read(key)
            if entry is None:
                say(f"{key}  unreadable (treated as a miss)")
                continue
            left = entry.expires - now
            state = f"{left:.0f} s left" if left > 0 else f"expired {-left:.0f} s ago"
            say(f"{key}  {entry.backend}  {fingerprint(entry.key)}  {state}")
        return EXIT_OK

    run(verbose, action)


@cache.command("clear")
@selection_options
@click.option("--all", "clear_all", is_flag=True, help="Every entry, not just this selection's.")
def cache_clear(selection: Selection, clear_all: bool) -> None:
    """Remove this selection's cache entry (or every entry with --all)."""
    from keyhelper.stores import FileCache

    def action() -> int:
        store = FileCache.open(os.environ)
        if clear_all:
            count = store.clear()
            say(f"removed {count} entr{'y' if count == 1 else 'ies'}")
        else:
            key = entry_key(Selection(selection.backends, selection.profile,
                                      selection.config), os.environ)
            say("removed 1 entry" if store.delete(key) else "no entry to remove")
        return EXIT_OK

    run(selection.verbose, action)

