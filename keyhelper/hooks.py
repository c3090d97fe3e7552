"""``keyhelper headers | aws-credentials | desktop``: a key in the shape another of Claude
Code's hooks reads (docs/hooks.md), on the full path.

Reads what the config says about shapes (each profile's ``headers``, the ``[mcp]`` mapping of
servers to profiles), keeps it in the shapes record for the hit path
(keyhelper.base.shapes), resolves the key as ``keyhelper`` does (the same chain, cache,
single flight, rotation detection, audit) and prints it in the shape. On any failure
stdout stays empty.
"""

from __future__ import annotations

import os
import sys

from keyhelper import config
from keyhelper.app import guarded, leave_the_project, setup_logging
from keyhelper.backend import aws_credentials
from keyhelper.base import shapes
from keyhelper.base.files import Selection, read_in_private_dir, write_private
from keyhelper.errors import EXIT_OK, ConfigError, KeyhelperError
from keyhelper.stores import CacheUnusable, FileCache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# RFC 9110 token characters: what a header name may hold.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ShapeError(KeyhelperError):
    """The key resolved, but it does not fit the shape asked for (exit 1)."""


# --- the config -------------------------------------------------------------------------

def _clean(text: str, source: str, key: str) -> str:
    if not text or not text.isprintable() or shapes.SEP in text:
        raise ConfigError("expected a non-empty string without control characters",
                          source=source, key=key)
    return text


def header_pairs(table: Mapping[str, str], source: str, key: str) -> list[tuple[str, str]]:
    """A ``headers`` table's (name, template) pairs, checked: names are HTTP tokens, values
    printable ASCII in which ``{key}`` stands for the key."""
    pairs = []
    for name, template in table.items():
        if not name or not set(name) <= _TCHAR:
            raise ConfigError("not a valid HTTP header name", source=source,
                              key=f"{key}.{name}")
        if not (template.isascii() and template.isprintable()):
            raise ConfigError("expected printable ASCII (a header value)", source=source,
                              key=f"{key}.{name}")
        pairs.append((name, template))
    return pairs


def read_shapes(settings: config.Settings) -> shapes.Shapes:
    """The shapes record's content, from the config as in effect."""
    raw = settings.raw
    source = settings.config_path or "defaults"
    profiles: Mapping[str, Any] = raw.get("profiles", {})
    result = shapes.Shapes()
    tables = [("", raw, "headers")] + [(name, table, f"profiles.{name}.headers")
                                        for name, table in profiles.items()]
    for profile, table, where in tables:
        if profile:
            _clean(profile, source, where)
        own = table.get("headers")
        pairs = header_pairs(own, source, where) if own is not None else None
        result.headers[profile] = pairs if pairs is not None else list(shapes.DEFAULT_HEADERS)
        result.desktop[profile] = pairs or []
    mcp = raw.get("mcp", {})
    for kind in ("servers", "urls"):
        for match, profile in mcp.get(kind, {}).items():
            where = f"mcp.{kind}.{match}"
            _clean(match, source, where)
            if profile not in profiles:
                known = ", ".join(sorted(profiles)) or "none"
                raise ConfigError(f"unknown profile {profile!r} (configured: {known})",
                                  source=source, key=where)
            if kind == "servers":
                result.servers[match] = profile
            else:
                result.urls.append((match, profile))
    return result


def save_shapes(selection: Selection, env: Mapping[str, str], found: shapes.Shapes) -> None:
    """Keep the record for the hit path (written only when it changes, as the route is);
    without a usable cache the full path serves every call."""
    try:
        directory = FileCache.open(env).directory
        name = shapes.record_name(selection, env)
        data = found.serialize()
        if read_in_private_dir(directory, name) != data:
            write_private(os.path.join(directory, name), data)
    except (CacheUnusable, OSError):
        pass


# --- AWS credentials --------------------------------------------------------------------

def aws_document(value: str) -> str:
    """The canonical compact document for a key that holds AWS credentials: ours
    (keyhelper.base.shapes.aws_key), ``{"Credentials": {...}}``, or the flat shape of
    ``aws configure export-credentials``. ShapeError when it holds none, or no Expiration."""
    found = shapes.aws_fields(value)
    if found is not None:
        return value
    import json  # ~15 ms: only for a document in another shape than ours

    try:
        loaded = json.loads(value)
    except (ValueError, RecursionError):
        raise ShapeError("the key is not an AWS credential document (JSON); use a backend "
                         "that returns AWS credentials (docs/hooks.md)") from None
    inner = loaded.get("Credentials", loaded) if isinstance(loaded, dict) else None
    if not isinstance(inner, dict):
        raise ShapeError("the key is not an AWS credential document")
    missing = [name for name in shapes.AWS_REQUIRED
               if not isinstance(inner.get(name), str) or not inner[name]]
    if missing:
        raise ShapeError(f"the AWS credentials have no {', '.join(missing)}")
    session = inner.get("SessionToken")
    return aws_credentials(inner["AccessKeyId"], inner["SecretAccessKey"],
                           session if isinstance(session, str) else None,
                           parse_time(inner["Expiration"])).value


def parse_time(text: str) -> float:
    """An ISO 8601 time (``Z`` or an offset) as epoch seconds."""
    from datetime import UTC, datetime  # only for a document in another shape than ours

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ShapeError("the AWS credentials' Expiration is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# --- the command ------------------------------------------------------------------------

def render(selection: Selection, key: str, found: shapes.Shapes) -> str:
    if selection.shape == shapes.AWS:
        return aws_document(key)
    rendered = shapes.render(selection.shape, key, found, selection.profile)
    if rendered is None:  # the record was just made from this config: cannot happen
        raise ShapeError(f"no headers for profile {selection.profile!r}")
    return rendered


def shape_output(selection: Selection, env: Mapping[str, str]) -> str:
    from keyhelper.resolver import resolve

    settings = config.load(Selection(selection.backends, None, selection.config), env)
    found = read_shapes(settings)
    save_shapes(selection, env, found)
    profile = shapes.mapped(selection, found, env)
    if profile is not None:
        selection = Selection((), profile, selection.config, selection.no_cache,
                              selection.verbose, selection.shape)
    if shapes.desktop_setup_test(selection, env):
        selection = Selection(selection.backends, selection.profile, selection.config, True,
                              selection.verbose, selection.shape)
    result = resolve(selection, env)
    return render(selection, result.token.value, found)


def run_shape(selection: Selection) -> int:
    """Print the key in the selection's shape, or explain on stderr (stdout stays empty)."""
    setup_logging(selection.verbose)
    leave_the_project(selection)

    def action() -> int:
        out = shape_output(selection, os.environ)
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
        return EXIT_OK

    return guarded(selection.verbose, action)
