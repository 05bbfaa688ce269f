"""A number, a boolean or a list where the API takes text is a 400 naming the field, and
nothing is stored: DRF's CharField would have stored a number's digits."""

from __future__ import annotations

from typing import Any

import pytest

from datasets_app.models import Dataset
from feedback.models import Campaign, User
from reviews import services
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db

NOT_TEXT = [5, 2.5, True, ["a"], {"a": 1}]


@pytest.mark.parametrize("value", NOT_TEXT)
def test_a_skip_note_must_be_text(api_for, expert: User, value: Any) -> None:
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/skip/", {"reason": "other", "note": value}, "json"
    )

    assert res.status_code == 400, res.json()
    assert list(res.json()["error"]["fields"]) == ["note"]
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.Status.CLAIMED


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("name", 5, "name"),
        ("instructions", 12.5, "instructions"),
        ("name", False, "name"),
        ("required_skills", ["law", 7], "required_skills.1"),
    ],
)
def test_a_campaigns_text_must_be_text(
    api_for, engineer: User, field: str, value: Any, named: str
) -> None:
    body = {"name": "Briefs", "kind": "pairwise", field: value}

    res = api_for(engineer).post("/api/v1/campaigns/", body, "json")

    assert res.status_code == 400, res.json()
    assert list(res.json()["error"]["fields"]) == [named]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(("field", "value"), [("name", 5), ("description", 1), ("format", 3)])
def test_a_datasets_text_must_be_text(
    api_for, engineer: User, pairwise_campaign: Campaign, field: str, value: Any
) -> None:
    body = {"name": "Prefs", "campaigns": [pairwise_campaign.pk], "format": "dpo", field: value}

    res = api_for(engineer).post("/api/v1/datasets/", body, "json")

    assert res.status_code == 400, res.json()
    assert list(res.json()["error"]["fields"]) == [field]
    assert not Dataset.objects.exists()


def test_text_is_still_taken_as_text(api_for, engineer: User) -> None:
    body = {"name": "5", "kind": "pairwise", "instructions": "Read **both**."}

    res = api_for(engineer).post("/api/v1/campaigns/", body, "json")

    assert res.status_code == 201, res.json()
    assert Campaign.objects.get().name == "5"
