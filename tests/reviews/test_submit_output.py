"""The submit's answer is the documented ReviewOutput, for every kind of review."""

from __future__ import annotations

import json

import pytest

from reviews.api import ReviewOutput
from reviews.models import Review
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5}]


def _body(kind: str, ids: list[int]) -> dict:
    common = {"rationale": "Because.", "flags": ["pii"], "active_seconds": 3}
    if kind == "pairwise":
        return {**common, "preference": {"chosen": ids[1], "strength": 3}}
    if kind == "ranking":
        return {**common, "ranking": list(reversed(ids))}
    if kind == "rating":
        return {**common, "ratings": {str(i): {"accuracy": 4} for i in ids}}
    return {
        **common,
        "ratings": {str(i): {"accuracy": 2} for i in ids},
        "correction": {"response": ids[0], "text": "Better."},
    }


@pytest.mark.parametrize("kind", ["pairwise", "ranking", "rating", "correction"])
@pytest.mark.parametrize("acceptance", ["auto", "lead"])
def test_the_submit_answers_with_the_review_as_documented(api_for, expert, kind, acceptance):
    campaign = CampaignFactory(kind=kind, rubric=RUBRIC, acceptance=acceptance)
    ItemFactory(campaign=campaign, responses=3 if kind == "ranking" else None)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    ids = [r["id"] for r in payload["item"]["responses"]]
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"

    first = client.post(url, _body(kind, ids), format="json")
    again = client.post(url, _body(kind, ids), format="json")

    assert (first.status_code, again.status_code) == (201, 200), first.json()
    stored = Review.objects.get(assignment_id=payload["assignment"]["id"])
    documented = json.loads(json.dumps(ReviewOutput(stored).data))
    assert set(documented) == set(ReviewOutput.Meta.fields)
    assert first.json() == documented
    assert again.json() == documented
