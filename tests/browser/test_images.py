"""An item's stored images load on the review page, from our own origin, under its CSP."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _data_url(width: int, height: int, color: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_the_prompt_context_and_response_images_load_for_the_expert_holding_the_item(
    api_for, engineer, expert, pairwise_campaign, open_session
):
    item = {
        "prompt": [
            {
                "role": "user",
                "content": "Which chart is right?",
                "images": [_data_url(40, 30, "red")],
            }
        ],
        "context": {"images": [_data_url(50, 20, "green")], "note": "the data"},
        "responses": [
            {"model": "a", "text": "The left one", "images": [_data_url(60, 10, "blue")]},
            {"model": "b", "text": "The right one"},
        ],
    }
    created = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [item], format="json"
    )
    assert created.status_code == 201, created.json()
    claimed = api_for(expert).post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/")
    assert claimed.status_code == 200

    session = open_session(expert)
    page = session.page
    page.goto(f"/review/a/{claimed.json()['assignment']['id']}/")
    images = page.locator("img.inline-image")
    assert images.count() == 3
    for index in range(3):
        images.nth(index).scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.inline-image')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    sizes = page.evaluate(
        "() => [...document.querySelectorAll('img.inline-image')]"
        ".map((img) => [img.alt, img.naturalWidth, img.naturalHeight])"
    )
    by_alt = {alt: (width, height) for alt, width, height in sizes}
    assert by_alt["Prompt image 1"] == (40, 30)
    assert by_alt["Context image 1"] == (50, 20)
    assert [size for alt, size in by_alt.items() if alt.startswith("Response ")] == [(60, 10)]
    assert page.get_by_text("is not shown").count() == 0
    session.watch.assert_clean()
