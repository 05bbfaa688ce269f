"""Serving an item's image to the expert who holds it: what their browser asks, and when
their hold ends."""

from __future__ import annotations

import base64
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from PIL import Image

from reviews.models import Assignment

pytestmark = pytest.mark.django_db


def _claimed_image(api_for, engineer, expert, campaign) -> tuple[int, int]:
    """An item whose prompt carries one image, claimed by the expert: (assignment, image)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    item = {
        "prompt": [{"role": "user", "content": "Which chart?", "images": [data_url]}],
        "responses": [{"model": "a", "text": "left"}, {"model": "b", "text": "right"}],
    }
    res = api_for(engineer).post(f"/api/v1/campaigns/{campaign.pk}/items/", [item], format="json")
    assert res.status_code == 201, res.json()
    claim = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    return claim["assignment"]["id"], claim["item"]["prompt"][0]["images"][0]["id"]


def test_a_client_that_accepts_only_images_is_served_the_image(
    api_for, engineer, expert, pairwise_campaign
):
    _assignment, image = _claimed_image(api_for, engineer, expert, pairwise_campaign)
    client = api_for(expert)

    for accept in ("image/*", "image/png", "image/avif,image/webp,*/*;q=0.8"):
        res = client.get(f"/api/v1/images/{image}/", HTTP_ACCEPT=accept)
        assert res.status_code == 200, (accept, res.status_code)
        assert res["Content-Type"] == "image/png"

    missing = client.get("/api/v1/images/987654/", HTTP_ACCEPT="image/*")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_hold_whose_lease_ran_out_no_longer_reaches_the_image_before_the_sweep(
    api_for, engineer, expert, pairwise_campaign
):
    assignment, image = _claimed_image(api_for, engineer, expert, pairwise_campaign)
    client = api_for(expert)
    assert client.get(f"/api/v1/images/{image}/").status_code == 200

    Assignment.objects.filter(pk=assignment).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert Assignment.objects.get(pk=assignment).status == Assignment.Status.CLAIMED
    assert client.get(f"/api/v1/images/{image}/").status_code == 404
