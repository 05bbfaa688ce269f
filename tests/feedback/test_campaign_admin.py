"""A campaign changed in the Django admin changes as through the API: a new overlap moves the
queue's slots, and the rubric and pay are checked."""

from __future__ import annotations

import json

import pytest

from feedback.models import Campaign, QueueEntry, User
from reviews import services as reviews
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
    totp_turn_on,
)

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5, "anchors": {}}]


def _change(client, campaign: Campaign, **changes):
    """Post the change form as a browser does: every field as it is, `changes` over it."""
    data = {
        "name": campaign.name,
        "slug": campaign.slug,
        "status": campaign.status,
        "instructions": campaign.instructions,
        "rubric": json.dumps(campaign.rubric),
        "overlap": campaign.overlap,
        "required_skills": json.dumps(campaign.required_skills),
        "gold_rate": campaign.gold_rate,
        "pay": json.dumps(campaign.pay),
        "acceptance": campaign.acceptance,
        "lease_minutes": campaign.lease_minutes,
        "generation_models": json.dumps(campaign.generation_models),
        "created_by": campaign.created_by_id or "",
        "created_at_0": "2026-11-29",
        "created_at_1": "10:00:00",
    } | changes
    return client.post(f"/admin/feedback/campaign/{campaign.pk}/change/", data)


def test_an_overlap_lowered_in_the_admin_moves_the_queue_slots(admin_mfa_client, engineer):
    campaign = CampaignFactory(overlap=3, created_by=engineer)
    item = ItemFactory(campaign=campaign)
    experts = UserFactory.create_batch(3, password=None)
    for expert in experts[:2]:
        reviews.assignment_claim(campaign=campaign, expert=expert)

    page = _change(admin_mfa_client, campaign, overlap=2)

    assert page.status_code == 302, page.context["adminform"].form.errors
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0
    assert reviews.assignment_claim(campaign=campaign, expert=experts[2]) is None


def test_a_rating_campaigns_rubric_cannot_be_emptied_in_the_admin(admin_mfa_client, engineer):
    campaign = CampaignFactory(kind="rating", rubric=RUBRIC, created_by=engineer)

    page = _change(admin_mfa_client, campaign, rubric="[]")

    assert page.status_code == 200
    assert "give at least one criterion for a rating campaign" in page.content.decode()
    campaign.refresh_from_db()
    assert campaign.rubric == RUBRIC


def test_what_the_api_refuses_the_admin_refuses(admin_mfa_client, engineer):
    campaign = CampaignFactory(overlap=2, created_by=engineer)

    page = _change(
        admin_mfa_client, campaign, overlap=0, gold_rate=7, lease_minutes=0, required_skills="7"
    )

    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert set(errors) == {"overlap", "gold_rate", "lease_minutes", "required_skills"}
    campaign.refresh_from_db()
    assert (campaign.overlap, campaign.gold_rate, campaign.lease_minutes) == (2, 0.0, 30)


def test_a_model_named_twice_is_refused_in_the_admin(admin_mfa_client, engineer):
    campaign = CampaignFactory(created_by=engineer, generation_models=["m-1", "m-2"])

    page = _change(admin_mfa_client, campaign, generation_models='["m-3", "m-3"]')

    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert errors == {"generation_models": ["a model appears twice: 'm-3'"]}
    campaign.refresh_from_db()
    assert campaign.generation_models == ["m-1", "m-2"]


def test_the_kind_and_slug_stay_as_made(admin_mfa_client, engineer):
    campaign = CampaignFactory(kind="pairwise", created_by=engineer)

    form = admin_mfa_client.get(f"/admin/feedback/campaign/{campaign.pk}/change/")
    page = _change(admin_mfa_client, campaign, kind="rating", slug="renamed", name="Renamed")

    assert 'name="kind"' not in form.content.decode()
    assert 'name="slug"' not in form.content.decode()
    assert page.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.kind, campaign.name) == ("pairwise", "Renamed")
    assert campaign.slug != "renamed"


def test_only_campaign_managers_add_or_change_campaigns(client):
    campaign = CampaignFactory(kind="pairwise")
    lead = UserFactory(role=User.Role.LEAD, is_staff=True, is_superuser=True, password=None)
    totp_turn_on(lead)  # staff need two factors for the admin
    client.force_login(lead)

    page = client.get(f"/admin/feedback/campaign/{campaign.pk}/change/")

    assert page.status_code == 200
    assert 'name="overlap"' not in page.content.decode(), "a lead reads, does not change"
    assert client.get("/admin/feedback/campaign/add/").status_code == 403
