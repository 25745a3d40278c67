"""Server-side apply bodies survive any text (found by the chaos suite's prompt fuzzing: a
prompt with an emoji never rendered, because JSON's surrogate-pair escape is not YAML)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.k8s.client import apply_patch_body


def test_characters_beyond_the_bmp_use_yaml_escapes() -> None:
    body = apply_patch_body({"data": {"system-prompt": "ok 🙂 \U0010fffd"}})
    assert b"\\ud83d" not in body
    assert b"\\U0001f642" in body and b"\\U0010fffd" in body
    assert body.isascii()


def test_an_escaped_backslash_is_not_mistaken_for_an_escape() -> None:
    text = "\\ud83d\\ude42 and \\U0001f642"  # literal backslashes, no emoji
    assert yaml.safe_load(apply_patch_body({"k": text})) == {"k": text}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_any_manifest_reads_back_unchanged_as_yaml(value: dict[str, Any]) -> None:
    assert yaml.safe_load(apply_patch_body(value).decode()) == value
