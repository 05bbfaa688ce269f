"""A campaign's status moves draft → active ⇄ paused → closed (a draft or paused one may be
closed at once), and closed is final: a PATCH or an admin's change that moves it any other way
is refused, naming the status, and changes nothing."""

from __future__ import annotations

import pytest

from feedback.models import Campaign
from tests.feedback.factories import CampaignFactory
from tests.feedback.test_campaign_admin import _change
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
    totp_turn_on,
)

pytestmark = pytest.mark.django_db


def _patch(client, campaign: Campaign, **changes):
    return client.patch(f"/api/v1/campaigns/{campaign.pk}/", changes, format="json")


def test_a_campaign_goes_through_its_statuses_in_order(api_for, engineer):
    client = api_for(engineer)
    campaign = CampaignFactory(status="draft", created_by=engineer)

    for status in ("active", "paused", "active", "paused", "closed"):
        answer = _patch(client, campaign, status=status)
        assert answer.status_code == 200, (status, answer.json())
        assert answer.json()["status"] == status
    campaign.refresh_from_db()
    assert campaign.status == "closed"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("closed", "active", "a closed campaign stays closed (not active)"),
        ("closed", "draft", "a closed campaign stays closed (not draft)"),
        ("active", "draft", "cannot go from active to draft; from active a campaign goes to "),
        ("paused", "draft", "cannot go from paused to draft; "),
        ("draft", "paused", "cannot go from draft to paused; "),
    ],
)
def test_a_status_moved_the_wrong_way_is_refused_and_nothing_changes(
    api_for, engineer, old, new, message
):
    campaign = CampaignFactory(status=old, overlap=2, created_by=engineer)

    answer = _patch(api_for(engineer), campaign, status=new, name="Renamed", overlap=3)

    assert answer.status_code == 400
    problems = answer.json()["error"]["fields"]
    assert list(problems) == ["status"]
    assert problems["status"][0].startswith(message), problems
    campaign.refresh_from_db()
    assert (campaign.status, campaign.name, campaign.overlap) == (old, campaign.name, 2)
    assert campaign.name != "Renamed"


def test_the_same_status_again_is_no_change(api_for, engineer):
    campaign = CampaignFactory(status="closed", created_by=engineer)
    client = api_for(engineer)
    got = client.get(f"/api/v1/campaigns/{campaign.pk}/").json()

    answer = _patch(client, campaign, **{**got, "name": "Renamed"})

    assert answer.status_code == 200, answer.json()
    campaign.refresh_from_db()
    assert (campaign.status, campaign.name) == ("closed", "Renamed")


@pytest.mark.parametrize("status", ["paused", "closed"])
def test_a_campaign_is_made_draft_or_active_only(api_for, engineer, status):
    client = api_for(engineer)

    refused = client.post(
        "/api/v1/campaigns/", {"name": "New", "kind": "pairwise", "status": status}, format="json"
    )
    made = client.post(
        "/api/v1/campaigns/",
        {"name": "Ready", "kind": "pairwise", "status": "active"},
        format="json",
    )

    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "status": [f"a campaign is made as draft or active, not {status}"]
    }
    assert not Campaign.objects.filter(name="New").exists()
    assert made.status_code == 201, made.json()
    assert Campaign.objects.get(name="Ready").status == "active"


def test_the_admin_refuses_what_the_api_refuses(admin_mfa_client, engineer):
    campaign = CampaignFactory(status="closed", created_by=engineer)

    page = _change(admin_mfa_client, campaign, status="active", name="Renamed")

    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert list(errors) == ["status"]
    assert errors["status"][0].startswith("a closed campaign stays closed (not active)")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.name) == ("closed", campaign.name)
    assert campaign.name != "Renamed"

    paused = CampaignFactory(status="active", created_by=engineer)
    assert _change(admin_mfa_client, paused, status="paused").status_code == 302
    paused.refresh_from_db()
    assert paused.status == "paused"
