"""The content hash reads the same content sent another way alike, and only that."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.item_input import MAX_NESTING, ResponseInput, content_hash


def one(prompt: Any, context: Any, *texts: str) -> str:
    return content_hash(prompt, context, [ResponseInput("m", t, "text") for t in texts])


@pytest.mark.parametrize(
    ("sent", "same_as"),
    [
        (("a\r\nb", {}, "x"), ("a\nb", {}, "x")),
        (("a\rb", {}, "x"), ("a\nb", {}, "x")),
        (("q", {}, "x\r\ny"), ("q", {}, "x\ny")),
        (
            ([{"role": "user", "content": "a\r\nb"}], {}, "x"),
            ([{"role": "user", "content": "a\nb"}], {}, "x"),
        ),
        (
            ("q", {"n": 17.0, "l": [2.0, {"d": "e\r\n"}]}, "x"),
            ("q", {"n": 17, "l": [2, {"d": "e\n"}]}, "x"),
        ),
        (("q", {"n": -0.0}, "x"), ("q", {"n": 0}, "x")),
    ],
)
def test_the_same_content_sent_another_way_hashes_the_same(sent, same_as):
    assert one(*sent) == one(*same_as)


@pytest.mark.parametrize(
    ("sent", "other"),
    [
        (("q", {"n": 17.5}, "x"), ("q", {"n": 17}, "x")),
        # Beyond 2**53 a float is no longer an exact integer: left as it is.
        (("q", {"n": 2.0**60}, "x"), ("q", {"n": 2**60}, "x")),
        (("a\\rb", {}, "x"), ("a\nb", {}, "x")),  # a backslash and an r, not a CR
        (("a\n\nb", {}, "x"), ("a\nb", {}, "x")),
        (("q", {}, "x "), ("q", {}, "x")),
    ],
)
def test_other_content_hashes_otherwise(sent, other):
    assert one(*sent) != one(*other)


def test_content_nested_past_the_limit_is_hashed_without_running_out_of_stack():
    """Such an item is refused for its nesting; an import hashes it before it is checked."""
    value: Any = 1.0
    for level in range(2 * MAX_NESTING + 100):
        value = [value] if level % 2 else {"k": value, "t": "a\r\nb"}

    assert len(one("with a CR\r\n", {"x": value}, "x")) == 64
