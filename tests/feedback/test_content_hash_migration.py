"""Migration 0015 gives items hashed before line breaks and whole floats were read alike the
hash they have now (feedback.item_input.content_hash), where it can reproduce the old one."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from feedback.item_input import ResponseInput, content_hash
from tests.feedback.test_queue_migration import migrate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("feedback", "0014_generation_answers_without_price")]
AFTER = [("feedback", "0015_content_hash_same_content")]


def old_hash(prompt, context, responses: list[tuple[str, str]]) -> str:
    """The hash as items were given it before: sorted-key JSON, nothing read alike."""
    document = {"prompt": prompt, "context": context, "responses": [list(r) for r in responses]}
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_hash(prompt, context, responses: list[tuple[str, str]]) -> str:
    return content_hash(prompt, context, [ResponseInput(m, t, "text") for m, t in responses])


def test_items_get_the_hash_they_would_have_now_where_the_old_one_is_reproduced():
    old = migrate(BEFORE)
    try:
        User = old.get_model("feedback", "User")
        Campaign = old.get_model("feedback", "Campaign")
        Item = old.get_model("feedback", "Item")
        Response = old.get_model("feedback", "Response")
        owner = User.objects.create(email="owner@example.test", role="admin")
        campaign = Campaign.objects.create(name="c", slug="c", created_by=owner)
        pair = [("m", "one\r\ntwo"), ("n", "three")]
        # name: (prompt, context, responses stored by position, the hash it was given)
        rows = {
            "crlf": ("a\r\nb", {}, pair, old_hash("a\r\nb", {}, pair)),
            # Responses generated after it came in: hashed over its prompt alone.
            "generated": ("p\rq", {}, pair, old_hash("p\rq", {}, [])),
            "float": (
                "c",
                {"n": [2.0, 2.5]},
                [("m", "x")],
                old_hash("c", {"n": [2.0, 2.5]}, [("m", "x")]),
            ),
            "unknown": ("d\r\n", {}, [], "a hash this migration cannot reproduce"),
            "plain": ("e", {"n": 3}, [("m", "x")], old_hash("e", {"n": 3}, [("m", "x")])),
            # The same content stored twice, with LF first and then CRLF: the first has the
            # new hash already, so the second keeps its own.
            "lf first": ("f\ng", {}, [], old_hash("f\ng", {}, [])),
            "crlf second": ("f\r\ng", {}, [], old_hash("f\r\ng", {}, [])),
        }
        ids = {}
        for name, (prompt, context, responses, hashed) in rows.items():
            item = Item.objects.create(
                campaign=campaign, prompt=prompt, context=context, content_hash=hashed
            )
            # Created last to first, so their ids run against their positions.
            for position, (model, text) in reversed(list(enumerate(responses))):
                Response.objects.create(item=item, model_name=model, text=text, position=position)
            ids[name] = item.pk

        new = migrate(AFTER)
        hashes = dict(new.get_model("feedback", "Item").objects.values_list("pk", "content_hash"))

        assert hashes[ids["crlf"]] == new_hash("a\nb", {}, [("m", "one\ntwo"), ("n", "three")])
        assert hashes[ids["crlf"]] != rows["crlf"][3]
        assert hashes[ids["generated"]] == new_hash("p\nq", {}, [])
        assert hashes[ids["float"]] == new_hash("c", {"n": [2, 2.5]}, [("m", "x")])
        assert hashes[ids["float"]] != rows["float"][3]
        assert hashes[ids["unknown"]] == rows["unknown"][3]
        assert hashes[ids["plain"]] == rows["plain"][3] == new_hash("e", {"n": 3}, [("m", "x")])
        assert hashes[ids["lf first"]] == rows["lf first"][3]
        assert hashes[ids["crlf second"]] == rows["crlf second"][3]
    finally:
        migrate([("feedback", "0015_content_hash_same_content")])
