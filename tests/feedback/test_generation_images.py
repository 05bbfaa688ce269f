"""Generation for items with images: the model is sent the images the expert will see.

The items are pushed through the API with base64 images (so they are checked and stored as
intake stores them); the real `openai` client sends the generation's requests over HTTP to the
local server of tests/feedback/conftest.py, which keeps the image parts each request carried.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from feedback.models import Item, ItemImage, Response
from tests.feedback.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(out, format="PNG")
    return out.getvalue()


def _data_url(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def _stored_as_data_url(image_id: int) -> str:
    image = ItemImage.objects.get(pk=image_id)
    with image.file.open("rb") as file:
        return f"data:{image.content_type};base64,{base64.b64encode(file.read()).decode()}"


@pytest.fixture
def push_and_generate(api_for, engineer, django_capture_on_commit_callbacks):
    client = api_for(engineer)

    def run(campaign: Any, items: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
        pushed = client.post(f"/api/v1/campaigns/{campaign.pk}/items/", items, format="json")
        assert pushed.status_code == 201, pushed.json()
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(
                f"/api/v1/campaigns/{campaign.pk}/generate/", {"models": models}, format="json"
            )
        assert res.status_code == 202, res.json()
        return client.get(f"/api/v1/generations/{res.json()['id']}/").json()

    return run


def test_the_prompts_and_contexts_images_are_sent_with_the_user_message(
    model_server, push_and_generate
):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    chart, photo, scan = _png("red"), _png("blue"), _png("green")
    status = push_and_generate(
        campaign,
        [
            {
                "prompt": [
                    {"role": "system", "content": "You read charts."},
                    {
                        "role": "user",
                        "content": "Which bar is taller?",
                        "images": [_data_url(chart)],
                    },
                    {"role": "assistant", "content": "The left one."},
                    {"role": "user", "content": "And here?", "images": [_data_url(photo)]},
                ],
                "context": {"images": [_data_url(scan)], "source": "annual report"},
            },
            {"prompt": "No picture here."},
        ],
        ["vision-a", "vision-b"],
    )

    assert status["status"] == "succeeded", status
    pictured = Item.objects.get(prompt__0__role="system")
    first, later = pictured.prompt[1]["images"][0]["id"], pictured.prompt[3]["images"][0]["id"]
    context = pictured.context["images"][0]["id"]
    for model in ("vision-a", "vision-b"):
        # The context's image goes with the first user message, before that message's own.
        assert model_server.images[(model, "And here?")] == [
            ("user", _stored_as_data_url(context)),
            ("user", _stored_as_data_url(first)),
            ("user", _stored_as_data_url(later)),
        ]
        assert model_server.images[(model, "No picture here.")] == []
    assert _stored_as_data_url(first) == _data_url(chart), "the image as it was sent"
    assert Response.objects.filter(item=pictured).count() == 2


def test_an_image_gone_from_storage_fails_its_item_only_saying_which(
    model_server, push_and_generate, django_capture_on_commit_callbacks, api_for, engineer
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        [
            {
                "prompt": [
                    {"role": "user", "content": "Describe it.", "images": [_data_url(_png("red"))]}
                ]
            }
        ],
        format="json",
    )
    image = ItemImage.objects.get()
    image.file.storage.delete(image.file.name)

    status = push_and_generate(campaign, [{"prompt": "Say hello."}], ["vision-a"])

    assert status["status"] == "succeeded", status
    assert status["failed_count"] == 1
    [error] = status["errors"]
    assert error["model"] == "vision-a"
    assert error["message"].startswith(
        f"image {image.pk} (prompt[0].images[0]) cannot be read from storage:"
    )
    assert ("vision-a", "Describe it.") not in model_server.images, "never asked without it"
    assert Response.objects.get().text == "vision-a answers: Say hello."
