"""`next/` answers with what the claim statement itself read of the item claimed: the same
answer as reading it apart, without that read."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reviews import selectors
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory
from tests.feedback.pictures import data_url, png

pytestmark = pytest.mark.django_db


def _item(n: int, *, gold: bool = False) -> dict:
    item = {
        "external_id": f"q-{n}",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": f"Which chart, {n}?",
                "images": [data_url(png(color="blue"))],
            },
        ],
        "context": {"text": f"Background {n}", "images": [data_url(png(color="blue"))]},
        "responses": [
            {"model": "a", "text": f"left {n}", "format": "markdown"},
            {"model": "b", "text": f"right {n}", "images": [data_url(png(color="blue"))]},
            {"model": "c", "text": f"neither {n}", "format": "code"},
        ],
    }
    if gold:
        item["is_gold"] = True  # judged by leads: a ranking's gold carries no answer
    return item


@pytest.mark.parametrize("gold", [False, True], ids=["queue", "gold"])
def test_next_answers_the_item_read_by_the_claim_itself(api_for, engineer, expert, gold):
    campaign = CampaignFactory(kind="ranking", gold_rate=1.0 if gold else 0.0, created_by=engineer)
    items = [_item(1), _item(2, gold=gold)] if gold else [_item(1)]
    added = api_for(engineer).post(f"/api/v1/campaigns/{campaign.pk}/items/", items, format="json")
    assert added.status_code == 201, added.content
    client = api_for(expert)

    with CaptureQueriesContext(connection) as queries:
        claimed = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")

    assert claimed.status_code == 200, claimed.content
    payload = claimed.json()
    assignment = Assignment.objects.get(pk=payload["assignment"]["id"])
    assert assignment.is_gold is gold
    # What reading the item apart gives, as the answer was before.
    apart = json.loads(json.dumps(selectors.assignment_payload(assignment=assignment)))
    assert payload == apart
    assert [r["id"] for r in payload["item"]["responses"]] == assignment.response_order
    assert [r["label"] for r in payload["item"]["responses"]] == ["A", "B", "C"]
    assert payload["item"]["prompt"][1]["images"][0]["url"].startswith("/api/v1/images/")
    assert payload["item"]["context"]["images"][0]["url"].startswith("/api/v1/images/")
    # Not read apart.
    assert not [q for q in queries if selectors._SHOWN_SQL in q["sql"]]

    # The claim given back (the expert asks again) is read apart, and is the same.
    again = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert again.status_code == 200
    assert again.json() == payload
