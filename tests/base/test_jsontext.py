"""The hit path's JSON writer (keyhelper.base.shapes.json_string, json_obj) against the json
module."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from keyhelper.base.shapes import json_obj, json_string

if TYPE_CHECKING:
    from keyhelper.base.shapes import Value

Pairs = list[tuple[str, str]]


@given(st.text())
def test_a_string_is_written_exactly_as_json_dumps_writes_it(text: str) -> None:
    written = json_string(text)
    assert written == json.dumps(text)
    assert json.loads(written) == text


@given(st.text(alphabet=st.characters(codec="utf-8")))  # beyond the BMP, no lone surrogates
def test_characters_beyond_the_bmp_are_surrogate_pairs(text: str) -> None:
    assert json_string(text) == json.dumps(text)


@given(st.lists(st.tuples(st.text(), st.text()), unique_by=lambda p: p[0]),
       st.lists(st.tuples(st.text(), st.text()), unique_by=lambda p: p[0]))
def test_an_object_is_compact_json(outer: Pairs, inner: Pairs) -> None:
    pairs: list[tuple[str, Value]] = [*outer, ("nested\u2028", inner)]
    expected = {**dict(outer), "nested\u2028": dict(inner)}
    written = json_obj(pairs)
    assert written == json.dumps(expected, separators=(",", ":"))
    assert json.loads(written) == expected


def test_fixed_cases() -> None:
    assert json_string('a"b\\c\n\x7f\x00é\U0001f600') == (
        '"a\\"b\\\\c\\n\\u007f\\u0000\\u00e9\\ud83d\\ude00"')
    assert json_obj([]) == "{}"
