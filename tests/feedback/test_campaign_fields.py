"""A campaign created or changed with a field it does not have is refused, naming the field:
a misspelt `overlaps` must not be answered 200 while the overlap stays as it was."""

from __future__ import annotations

import pytest

from feedback.models import Campaign

pytestmark = pytest.mark.django_db


def test_a_misspelt_field_is_refused_and_changes_nothing(api_for, engineer, pairwise_campaign):
    client = api_for(engineer)
    overlap = pairwise_campaign.overlap

    patched = client.patch(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/",
        {"overlaps": overlap + 2, "name": "Renamed"},
        format="json",
    )
    created = client.post(
        "/api/v1/campaigns/",
        {"name": "New", "kind": "pairwise", "gold_ratio": 0.1},
        format="json",
    )

    assert patched.status_code == 400
    assert patched.json()["error"]["fields"] == {"overlaps": ["is not a field of a campaign"]}
    pairwise_campaign.refresh_from_db()
    assert pairwise_campaign.overlap == overlap
    assert pairwise_campaign.name != "Renamed"
    assert created.status_code == 400
    assert created.json()["error"]["fields"] == {"gold_ratio": ["is not a field of a campaign"]}
    assert not Campaign.objects.filter(name="New").exists()


def test_a_campaign_sent_back_as_get_gave_it_is_taken(api_for, engineer, pairwise_campaign):
    client = api_for(engineer)
    got = client.get(f"/api/v1/campaigns/{pairwise_campaign.pk}/").json()

    patched = client.patch(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/", {**got, "overlap": 2}, format="json"
    )

    assert patched.status_code == 200, patched.json()
    assert patched.json()["overlap"] == 2
    # Its slug and kind as they are change nothing; another one is refused.
    moved = client.patch(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/",
        {**got, "kind": "rating", "name": "Renamed"},
        format="json",
    )
    assert moved.status_code == 400
    assert moved.json()["error"]["fields"] == {"kind": ["cannot be changed"]}
    pairwise_campaign.refresh_from_db()
    assert (pairwise_campaign.kind, pairwise_campaign.overlap) == ("pairwise", 2)
    assert pairwise_campaign.name != "Renamed"


@pytest.mark.parametrize("value", ["yes", 1, "on"])
def test_requires_qualification_is_true_or_false_only(api_for, engineer, pairwise_campaign, value):
    client = api_for(engineer)

    patched = client.patch(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/",
        {"requires_qualification": value, "name": "Renamed"},
        format="json",
    )

    assert patched.status_code == 400
    assert patched.json()["error"]["fields"] == {
        "requires_qualification": ["Must be true or false."]
    }
    pairwise_campaign.refresh_from_db()
    assert pairwise_campaign.requires_qualification is False
    assert pairwise_campaign.name != "Renamed"
