"""Submit, skip and draft refuse what cannot be stored, and read response ids strictly:
a 400 naming the field, nothing saved, never a 500."""

from __future__ import annotations

import json

import pytest

from feedback.errors import ValidationFailed
from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed(api_for, expert):
    def claim(kind: str = "pairwise"):
        campaign = CampaignFactory(kind=kind, overlap=1)
        ItemFactory(campaign=campaign, responses=3 if kind == "ranking" else None)
        client = api_for(expert)
        payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
        return client, payload

    return claim


def _post_raw(client, assignment_id: int, raw: str):
    """A body as sent, escapes and all: a lone surrogate cannot be encoded any other way."""
    return client.post(
        f"/api/v1/assignments/{assignment_id}/submit/", data=raw, content_type="application/json"
    )


@pytest.mark.parametrize(
    ("kind", "field", "body"),
    [
        ("pairwise", "rationale", '{"preference": {"chosen": %(a)s}, "rationale": "a\\u0000b"}'),
        ("pairwise", "rationale", '{"preference": {"chosen": %(a)s}, "rationale": "a\\ud800b"}'),
        (
            "correction",
            "correction.text",
            '{"correction": {"response": %(a)s, "text": "fixed\\u0000"}}',
        ),
        (
            "pairwise",
            "pasted_chars",
            '{"preference": {"chosen": %(a)s}, "pasted_chars": {"ratio\\u0000nale": 3}}',
        ),
        ("pairwise", "\ufffdx", '{"preference": {"chosen": %(a)s}, "\\ud800x": 1}'),
    ],
)
def test_what_cannot_be_stored_is_a_400_naming_the_field(claimed, kind, field, body):
    client, payload = claimed(kind)
    first = payload["item"]["responses"][0]["id"]
    assignment_id = payload["assignment"]["id"]

    res = _post_raw(client, assignment_id, body % {"a": first})

    assert res.status_code == 400, res.content
    assert field in res.json()["error"]["fields"]
    assert not Review.objects.exists()
    assert Assignment.objects.get(pk=assignment_id).status == "claimed"


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("pairwise", lambda ids: {"preference": {"chosen": ids[0] + 0.9}}, "preference.chosen"),
        ("pairwise", lambda ids: {"preference": {"chosen": True}}, "preference.chosen"),
        ("ranking", lambda ids: {"ranking": [i + 0.5 for i in ids]}, "ranking[0]"),
        ("ranking", lambda ids: {"ranking": [str(ids[0]) + ".0", *ids[1:]]}, "ranking[0]"),
        # More digits than int() reads (4,300): an error, not a 500.
        ("ranking", lambda ids: {"ranking": ["9" * 5000, *ids[1:]]}, "ranking[0]"),
    ],
)
def test_a_response_id_is_an_integer_or_its_digits_never_a_float_or_boolean(
    claimed, kind, body, field
):
    client, payload = claimed(kind)
    ids = [r["id"] for r in payload["item"]["responses"]]

    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        json.loads(json.dumps(body(ids))),
        format="json",
    )

    assert res.status_code == 400, res.json()
    assert "is not a response id" in res.json()["error"]["fields"][field][0]
    assert not Review.objects.exists()


@pytest.mark.parametrize(
    ("kind", "extra", "field"),
    [
        ("pairwise", {"rationale": 0}, "rationale"),
        ("pairwise", {"rationale": False}, "rationale"),
        ("pairwise", {"rationale": []}, "rationale"),
        ("pairwise", {"flags": ""}, "flags"),
        ("pairwise", {"flags": 0}, "flags"),
        ("pairwise", {"flags": {}}, "flags"),
        ("pairwise", {"ratings": []}, "ratings"),
        ("pairwise", {"ratings": 0}, "ratings"),
        ("pairwise", {"ratings": False}, "ratings"),
        ("pairwise", {"pasted_chars": []}, "pasted_chars"),
        ("pairwise", {"pasted_chars": 0}, "pasted_chars"),
        ("pairwise", {"ranking": 0}, "ranking"),
        ("pairwise", {"correction": 0}, "correction"),
        ("pairwise", {"correction": ""}, "correction"),
        ("rating", {"preference": 0}, "preference"),
        ("rating", {"preference": False}, "preference"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_even_when_empty(claimed, kind, extra, field):
    """`"rationale": 5` was a 400 naming it, `"rationale": 0` stored as no rationale: a value
    read as absent for being falsy skipped the check of its type."""
    client, payload = claimed(kind)
    ids = [r["id"] for r in payload["item"]["responses"]]
    base = {"preference": {"chosen": ids[0]}} if kind == "pairwise" else {}

    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {**base, **extra},
        format="json",
    )

    assert res.status_code == 400, res.json()
    assert list(res.json()["error"]["fields"]) == [field]
    assert not Review.objects.exists()
    assert Assignment.objects.get(pk=payload["assignment"]["id"]).status == "claimed"


@pytest.mark.parametrize(
    "extra",
    [
        {"rationale": None, "flags": None, "ratings": None, "pasted_chars": None},
        {"ranking": None, "correction": None, "active_seconds": None},
        {"ranking": [], "correction": {}, "ratings": {}, "flags": [], "pasted_chars": {}},
    ],
)
def test_fields_left_null_or_empty_say_nothing(claimed, extra):
    """A client that sends every field of a review, the ones its campaign does not use as null
    or empty, is taken."""
    client, payload = claimed("pairwise")
    ids = [r["id"] for r in payload["item"]["responses"]]

    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"preference": {"chosen": ids[0]}, **extra},
        format="json",
    )

    assert res.status_code == 201, res.json()
    assert (res.json()["rationale"], res.json()["flags"], res.json()["ranking"]) == ("", [], [])


def test_response_ids_as_digit_strings_are_taken(claimed):
    client, payload = claimed("ranking")
    ids = [str(r["id"]) for r in payload["item"]["responses"]]

    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"ranking": ids},
        format="json",
    )

    assert res.status_code == 201, res.json()


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
def test_a_skip_note_or_draft_that_cannot_be_stored_is_refused(expert, text):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    with pytest.raises(ValidationFailed) as skip:
        services.assignment_skip(
            assignment_id=assignment.pk, expert=expert, reason="other", note=text
        )
    with pytest.raises(ValidationFailed) as draft:
        services.assignment_save_draft(
            assignment_id=assignment.pk, expert=expert, draft={"rationale": {"x": [text]}}
        )

    assert set(skip.value.fields) == {"note"}
    assert set(draft.value.fields) == {"draft"}
    assignment.refresh_from_db()
    assert (assignment.status, assignment.draft) == ("claimed", {})
