"""The output shapes of Claude Code's other credential hooks, served on the hit path.

- ``keyhelper headers``: a JSON object of headers (MCP ``headersHelper``,
  ``otelHeadersHelper``), by default ``{"Authorization":"Bearer <key>"}``;
- ``keyhelper aws-credentials``: the AWS credential document (Bedrock's
  ``awsCredentialExport``), ``{"Credentials":{"AccessKeyId":...,"Expiration":...}}``;
- ``keyhelper desktop``: Claude Desktop's ``{"token":...,"headers":{...}}``.

What the config says about them (each profile's headers, the MCP server -> profile mapping)
is kept by the full path (keyhelper.hooks) in a private "shapes" record named after the
config file's identity, so a hit needs no TOML: the record's name changes when the file does.
The cached key of an AWS profile is the compact credential document itself
(:func:`aws_key`), so the cache entry's format is the same for every shape.
"""

from keyhelper.base.files import (
    POLICY_PATH,
    SHAPE_COMMANDS,
    Selection,
    cache_dir,
    config_path,
    file_identity,
    read_in_private_dir,
)
from keyhelper.base.records import digest, dump, load

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    Value = str | Iterable[tuple[str, "Value"]]
    Hit = Callable[[Selection, Mapping[str, str], Sequence[str], str], "str | None"]

HEADERS, AWS, DESKTOP = "headers", "aws-credentials", "desktop"
SHAPES = SHAPE_COMMANDS  # (HEADERS, AWS, DESKTOP)
HELPER_CONTEXT = "CLAUDE_HELPER_CONTEXT"  # Claude Desktop says why it runs the helper
PLACEHOLDER = "{key}"
DEFAULT_HEADERS = (("Authorization", "Bearer " + PLACEHOLDER),)
MCP_NAME = "CLAUDE_CODE_MCP_SERVER_NAME"
MCP_URL = "CLAUDE_CODE_MCP_SERVER_URL"
AWS_FIELDS = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
AWS_REQUIRED = ("AccessKeyId", "SecretAccessKey", "Expiration")
_AWS_HEAD = '{"Credentials":{'
_AWS_TAIL = "}}"
SHAPES_FORMAT = "keyhelper-shapes 1"
SEP = "\x1f"  # between the parts of one field; the config may not use it (keyhelper.hooks)


class Shapes:
    """The config's shapes: MCP server names and URL prefixes mapped to profiles, and each
    profile's headers ("" is the top level) for ``headers`` and for ``desktop``."""

    __slots__ = ("desktop", "headers", "servers", "urls")

    def __init__(self) -> None:
        self.servers: dict[str, str] = {}
        self.urls: list[tuple[str, str]] = []
        self.headers: dict[str, list[tuple[str, str]]] = {}
        self.desktop: dict[str, list[tuple[str, str]]] = {}

    def serialize(self) -> bytes:
        fields = [("server", name + SEP + profile) for name, profile in self.servers.items()]
        fields += [("url", prefix + SEP + profile) for prefix, profile in self.urls]
        for kind, table in (("header", self.headers), ("desktop", self.desktop)):
            fields += [("profile-" + kind, profile) for profile in table]
            fields += [(kind, SEP.join((profile, name, value)))
                       for profile, pairs in table.items() for name, value in pairs]
        return dump(SHAPES_FORMAT, fields)

    def profile_for(self, env: "Mapping[str, str]") -> str | None:
        """The profile of the MCP server Claude Code runs us for: its name exactly, else the
        longest URL prefix that matches; None when neither is mapped."""
        name = env.get(MCP_NAME)
        if name and name in self.servers:
            return self.servers[name]
        url = env.get(MCP_URL) or ""
        found = [(len(prefix), profile) for prefix, profile in self.urls
                 if url and url_matches(prefix, url)]
        return max(found)[1] if found else None


def parse_shapes(data: bytes) -> "Shapes | None":
    fields = load(SHAPES_FORMAT, data)
    if fields is None:
        return None
    shapes = Shapes()
    tables = {"header": shapes.headers, "desktop": shapes.desktop}
    for name, value in fields:
        parts = value.split(SEP)
        if name == "server" and len(parts) == 2:
            shapes.servers[parts[0]] = parts[1]
        elif name == "url" and len(parts) == 2:
            shapes.urls.append((parts[0], parts[1]))
        elif name.startswith("profile-") and name[8:] in tables and len(parts) == 1:
            tables[name[8:]][value] = []
        elif name in tables and len(parts) == 3 and parts[0] in tables[name]:
            tables[name][parts[0]].append((parts[1], parts[2]))
        else:
            return None
    return shapes


def url_matches(prefix: str, url: str) -> bool:
    """``url`` is ``prefix`` or lies under it: "https://a.example/mcp" matches
    "https://a.example/mcp/x" and "https://a.example/mcp?x", never "https://a.example/mcpx"."""
    if not url.startswith(prefix):
        return False
    return len(url) == len(prefix) or prefix.endswith("/") or url[len(prefix)] in "/?#"


def record_name(selection: Selection, env: "Mapping[str, str]") -> str:
    """The shapes record of a config file, named after its identity and the policy's (as
    cache entries are: keyhelper.base.records.entry_key)."""
    path, _ = config_path(selection, env)
    parts = ["shapes1", path, file_identity(path), file_identity(POLICY_PATH)]
    return digest("\x00".join(parts)) + ".shapes"


def marker_context(env: "Mapping[str, str]") -> str:
    """What tells one MCP server's calls from another's in rotation detection: Claude Code
    runs one headersHelper per server, so a second server's first call is no repeat."""
    name = env.get(MCP_NAME)
    if name is None:
        return ""
    # Hashed as bytes: a name that is no UTF-8 comes surrogate-escaped from the environment.
    return ".mcp-" + digest(name.encode("utf-8", "surrogateescape").hex())[:16]


# --- JSON text without json ---------------------------------------------------------------
# The json module costs 8 ms to import (mostly re). json_string writes exactly what
# json.dumps(text) writes (ASCII, the same escapes), json_obj a flat or nested object of
# strings as json.dumps(obj, separators=(",", ":")); tests/base/test_jsontext.py holds both
# to the json module with hypothesis. Here rather than in a module of its own: one module
# fewer to import on every shape's hit.

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


def json_string(text: str) -> str:
    """``text`` as a JSON string literal: printable ASCII as is, all else escaped."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'  # the common case (keys, header names), without a loop
    return '"' + "".join(ch if " " <= ch <= "~" and ch not in '"\\' else _escape(ch)
                         for ch in text) + '"'


def json_obj(pairs: "Iterable[tuple[str, Value]]") -> str:
    """An object of string (or nested object) values, compact, in the order given."""
    parts = []
    for name, value in pairs:
        parts.append(json_string(name) + ":" + (json_string(value) if isinstance(value, str)
                                                     else json_obj(value)))
    return "{" + ",".join(parts) + "}"


# --- rendering ---------------------------------------------------------------------------

def header_values(pairs: "Sequence[tuple[str, str]]", key: str) -> list[tuple[str, str]]:
    return [(name, template.replace(PLACEHOLDER, key)) for name, template in pairs]


def render(shape: str, key: str, shapes: Shapes, profile: str | None) -> str | None:
    """The hook's stdout (without the line break) for ``key``; None when the key does not
    fit the shape (the full path then says why)."""
    if shape == AWS:
        return key if aws_fields(key) is not None else None
    table = shapes.headers if shape == HEADERS else shapes.desktop
    pairs = table.get(profile or "")
    if pairs is None:
        return None
    if shape == HEADERS:
        return json_obj(header_values(pairs, key))
    return json_obj([("token", key), ("headers", header_values(pairs, key))])


def aws_key(fields: "Mapping[str, str]") -> str:
    """The compact credential document that is an AWS profile's cached key."""
    return json_obj([("Credentials", [(name, fields[name]) for name in AWS_FIELDS
                                          if fields.get(name)])])


def aws_fields(key: str) -> dict[str, str] | None:
    """The fields of a document :func:`aws_key` wrote (quotes and backslashes never occur
    in AWS credentials, so none is escaped); None for anything else."""
    if not (key.startswith(_AWS_HEAD) and key.endswith(_AWS_TAIL)):
        return None
    fields = {}
    for part in key[len(_AWS_HEAD):-len(_AWS_TAIL)].split(","):
        name, colon, value = part.partition(":")
        if (not colon or len(name) < 3 or len(value) < 3 or name[0] != '"' or name[-1] != '"'
                or value[0] != '"' or value[-1] != '"'):
            return None
        name, value = name[1:-1], value[1:-1]
        if name not in AWS_FIELDS or name in fields or '"' in value or "\\" in value:
            return None
        fields[name] = value
    if any(name not in fields for name in AWS_REQUIRED):
        return None
    return fields


def desktop_setup_test(selection: Selection, env: "Mapping[str, str]") -> bool:
    """Claude Desktop testing its settings: the chain must really run (no cached answer)."""
    return selection.shape == DESKTOP and env.get(HELPER_CONTEXT) == "setup-test"


def mapped(selection: Selection, shapes: Shapes, env: "Mapping[str, str]") -> str | None:
    """The MCP server's profile for ``keyhelper headers`` without --profile or --backend."""
    if selection.shape != HEADERS or selection.profile is not None or selection.backends:
        return None
    return shapes.profile_for(env)


def serve(selection: Selection, env: "Mapping[str, str]", argv: "Sequence[str]",
          hit: "Hit") -> str | None:
    """A shape's output from the cache (``hit``: keyhelper.cachepolicy.try_hit), or None
    for the full path: no shapes record yet, Desktop's setup test, a miss."""
    if desktop_setup_test(selection, env):
        return None
    directory = cache_dir(env)
    data = read_in_private_dir(directory, record_name(selection, env))
    shapes = parse_shapes(data) if data is not None else None
    if shapes is None:
        return None
    profile = mapped(selection, shapes, env)
    if profile is not None:
        selection = Selection((), profile, selection.config, shape=selection.shape)
        argv = [*argv, "--profile", profile]  # the refresh child refreshes this entry
    key = hit(selection, env, argv, marker_context(env))
    return None if key is None else render(selection.shape, key, shapes, selection.profile)
