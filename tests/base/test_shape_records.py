"""The hit path's pieces of the hooks' shapes (keyhelper.base.shapes): the AWS document the
backends cache and the hit reads back, the shapes record, the MCP URL prefix rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyhelper.base import shapes

# What AWS issues: key ids, base64 secrets and tokens (no quote, backslash or comma).
AWS_TEXT = st.text(alphabet=st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-:."), min_size=1)
# What TOML can hold (no lone surrogates), without the record's separator (hooks.py refuses it).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters=shapes.SEP), min_size=1)


@given(AWS_TEXT, AWS_TEXT, st.one_of(st.none(), AWS_TEXT), AWS_TEXT)
def test_the_aws_document_reads_back(access: str, secret: str, session: str | None,
                                     expiration: str) -> None:
    fields = {"AccessKeyId": access, "SecretAccessKey": secret, "SessionToken": session or "",
              "Expiration": expiration}
    key = shapes.aws_key(fields)
    expected = {k: v for k, v in fields.items() if v}
    assert shapes.aws_fields(key) == expected
    assert json.loads(key) == {"Credentials": expected}


@pytest.mark.parametrize("key", [
    '{"Credentials":{"AccessKeyId":"A","SecretAccessKey":"S"}}',  # no Expiration
    '{"Credentials":{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"E","X":"y"}}',
    '{"Credentials":{"AccessKeyId":"A","AccessKeyId":"B","SecretAccessKey":"S",'
    '"Expiration":"E"}}',
    '{"Credentials":{"AccessKeyId":"A\\"","SecretAccessKey":"S","Expiration":"E"}}',
    '{"Credentials": {"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"E"}}',
    '{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"E"}',
    "sk-plain-key",
])
def test_anything_else_is_no_aws_document_on_the_hit_path(key: str) -> None:
    assert shapes.aws_fields(key) is None


@given(st.dictionaries(TEXT, TEXT), st.lists(st.tuples(TEXT, TEXT)),
       st.dictionaries(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                      blacklist_characters=shapes.SEP)),
                       st.lists(st.tuples(TEXT, TEXT))))  # "" is the top level
def test_the_shapes_record_reads_back(servers: dict[str, str], urls: list[tuple[str, str]],
                                      headers: dict[str, list[tuple[str, str]]]) -> None:
    record = shapes.Shapes()
    record.servers, record.urls, record.headers = servers, urls, headers
    record.desktop = {profile: pairs[:1] for profile, pairs in headers.items()}
    back = shapes.parse_shapes(record.serialize())
    assert back is not None
    assert (back.servers, back.urls, back.headers, back.desktop) == (
        servers, urls, headers, record.desktop)


@pytest.mark.parametrize(("prefix", "url", "matches"), [
    ("https://a.example/mcp", "https://a.example/mcp", True),
    ("https://a.example/mcp", "https://a.example/mcp/x", True),
    ("https://a.example/mcp", "https://a.example/mcp?x=1", True),
    ("https://a.example/mcp", "https://a.example/mcp#f", True),
    ("https://a.example/mcp", "https://a.example/mcpx", False),
    ("https://a.example", "https://a.example.evil.test/", False),
    ("https://a.example/", "https://a.example/anything", True),
    ("https://a.example/mcp", "http://a.example/mcp", False),
])
def test_url_prefixes_end_at_a_boundary(prefix: str, url: str, matches: bool) -> None:
    assert shapes.url_matches(prefix, url) is matches


def test_the_exact_name_wins_then_the_longest_prefix() -> None:
    record = shapes.Shapes()
    record.servers = {"gh": "by-name"}
    record.urls = [("https://x", "short"), ("https://x/deep", "long")]
    url = "https://x/deep/mcp"
    assert record.profile_for({shapes.MCP_NAME: "gh", shapes.MCP_URL: url}) == "by-name"
    assert record.profile_for({shapes.MCP_NAME: "other", shapes.MCP_URL: url}) == "long"
    assert record.profile_for({shapes.MCP_URL: "https://x/other"}) == "short"
    assert record.profile_for({shapes.MCP_URL: "https://y"}) is None
