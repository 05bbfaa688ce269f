"""Blind review in the campaign API: the models a campaign compares are named only to those
who manage campaigns, never to the experts and leads who review its items."""

from __future__ import annotations

import pytest

from feedback.models import User
from tests.feedback.factories import CampaignFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_campaign_api_names_its_models_only_to_admins_and_ml_engineers(
    api_for, engineer, expert, admin_user
):
    lead = UserFactory(role=User.Role.LEAD)
    campaign = CampaignFactory(generation_models=["vendor-x-large", "vendor-y-mini"])

    for reviewer in (expert, lead):
        client = api_for(reviewer)
        detail = client.get(f"/api/v1/campaigns/{campaign.pk}/")
        listed = client.get("/api/v1/campaigns/")
        assert detail.status_code == 200
        assert "generation_models" not in detail.json()
        assert [c["id"] for c in listed.json()] == [campaign.pk]
        assert "generation_models" not in listed.json()[0]
        assert "vendor-x" not in detail.content.decode() + listed.content.decode()

    for manager in (engineer, admin_user):
        client = api_for(manager)
        assert client.get(f"/api/v1/campaigns/{campaign.pk}/").json()["generation_models"] == [
            "vendor-x-large",
            "vendor-y-mini",
        ]
        assert client.get("/api/v1/campaigns/").json()[0]["generation_models"] == [
            "vendor-x-large",
            "vendor-y-mini",
        ]


def test_an_engineer_creating_or_changing_a_campaign_gets_its_models_back(api_for, engineer):
    client = api_for(engineer)
    made = client.post(
        "/api/v1/campaigns/",
        {"name": "Pairs", "kind": "pairwise", "generation_models": ["m-1", "m-2"]},
        format="json",
    )
    changed = client.patch(
        f"/api/v1/campaigns/{made.json()['id']}/",
        {"generation_models": ["m-3", "m-4"]},
        format="json",
    )

    assert made.status_code == 201, made.json()
    assert made.json()["generation_models"] == ["m-1", "m-2"]
    assert changed.json()["generation_models"] == ["m-3", "m-4"]


def test_experts_are_not_told_the_share_of_gold_items(api_for, engineer, expert, admin_user):
    lead = UserFactory(role=User.Role.LEAD)
    campaign = CampaignFactory(gold_rate=0.15)

    client = api_for(expert)
    assert "gold_rate" not in client.get(f"/api/v1/campaigns/{campaign.pk}/").json()
    assert "gold_rate" not in client.get("/api/v1/campaigns/").json()[0]
    for checker in (lead, engineer, admin_user):
        detail = api_for(checker).get(f"/api/v1/campaigns/{campaign.pk}/").json()
        assert detail["gold_rate"] == 0.15
