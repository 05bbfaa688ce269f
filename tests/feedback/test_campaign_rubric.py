"""A rating campaign rates by its rubric: created or changed without one, it is refused."""

from __future__ import annotations

import pytest

from feedback.models import Campaign

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "accuracy", "min": 1, "max": 5}]


def test_a_rating_campaign_without_a_rubric_is_refused(api_for, engineer):
    client = api_for(engineer)

    bare = client.post("/api/v1/campaigns/", {"name": "Bare", "kind": "rating"}, format="json")
    rated = client.post(
        "/api/v1/campaigns/", {"name": "Rated", "kind": "rating", "rubric": RUBRIC}, format="json"
    )
    cleared = client.patch(
        f"/api/v1/campaigns/{rated.json()['id']}/", {"rubric": []}, format="json"
    )

    assert bare.status_code == 400
    assert bare.json()["error"]["fields"] == {
        "rubric": ["give at least one criterion for a rating campaign"]
    }
    assert rated.status_code == 201, rated.json()
    assert cleared.status_code == 400
    assert Campaign.objects.get().rubric[0]["key"] == "accuracy"
    # Other kinds may go without one: a pairwise review is its preference.
    pairwise = client.post(
        "/api/v1/campaigns/", {"name": "Pairs", "kind": "pairwise"}, format="json"
    )
    assert pairwise.status_code == 201
