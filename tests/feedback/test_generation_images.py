"""Generation for items with images: the model is sent the images the expert will see.

The items are pushed through the API with base64 images (so they are checked and stored as
intake stores them); the real `openai` client sends the generation's requests over HTTP to the
local server of tests/feedback/conftest.py, which keeps the image parts each request carried.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from feedback.models import Item, ItemImage, Response
from tests.feedback.factories import CampaignFactory
from tests.feedback.pictures import data_url as _data_url
from tests.feedback.pictures import png

pytestmark = pytest.mark.django_db


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
    chart, photo, scan = png(color="red"), png(color="blue"), png(color="green")
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


@pytest.mark.parametrize(
    ("prompt", "context", "expected"),
    [
        # A prompt of text: one user message, its text, then the context's image.
        ("Describe it.", {"images": ["ctx"]}, [("user", ["text", "ctx"])]),
        # No user message: the context's image in a user message of its own, at the end.
        (
            [
                {"role": "system", "content": "Be brief."},
                {"role": "assistant", "content": "Send a picture.", "images": ["own"]},
            ],
            {"images": ["ctx"]},
            [("system", "Be brief."), ("assistant", ["text", "own"]), ("user", ["ctx"])],
        ),
        # A message of images alone has no text part.
        ([{"role": "user", "content": "", "images": ["own"]}], {}, [("user", ["own"])]),
    ],
)
def test_each_prompt_shape_sends_its_images_where_the_docs_say(
    model_server, push_and_generate, prompt, context, expected
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    pictures = {"ctx": png(color="red"), "own": png(color="blue")}

    def with_images(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: [_data_url(pictures[v]) for v in vs] if k == "images" else with_images(vs)
                for k, vs in value.items()
            }
        return [with_images(v) for v in value] if isinstance(value, list) else value

    item: dict[str, Any] = {"prompt": with_images(prompt)}
    if context:
        item["context"] = with_images(context)
    status = push_and_generate(campaign, [item], ["shapes"])

    assert status["status"] == "succeeded", status
    sent = model_server.last_messages["shapes"]
    urls = {name: _data_url(data) for name, data in pictures.items()}
    shown = []
    for message in sent:
        content = message["content"]
        if isinstance(content, list):
            content = [
                "text"
                if part["type"] == "text"
                else next(n for n, u in urls.items() if u == part["image_url"]["url"])
                for part in content
            ]
        shown.append((message["role"], content))
    assert shown == expected


def _gone_row(image: ItemImage) -> None:
    image.delete()


def _gone_file(image: ItemImage) -> None:
    image.file.storage.delete(image.file.name)


def _outside_storage(image: ItemImage) -> None:
    # A name Django's storage refuses to open (SuspiciousFileOperation, not an OSError).
    ItemImage.objects.filter(pk=image.pk).update(file="../../outside.png")


def _not_an_image(image: ItemImage) -> None:
    # JSON typed into the item by hand: a reference that was never stored.
    item = Item.objects.get(prompt__0__content="Describe it.")
    item.prompt[0]["images"] = ["data:image/png;base64,AAAA"]
    item.save(update_fields=["prompt"])


def _not_a_list(image: ItemImage) -> None:
    item = Item.objects.get(prompt__0__content="Describe it.")
    item.prompt[0]["images"] = 5
    item.save(update_fields=["prompt"])


def _not_a_message(image: ItemImage) -> None:
    item = Item.objects.get(prompt__0__content="Describe it.")
    item.prompt = [{"content": "Describe it."}]
    item.save(update_fields=["prompt"])


@pytest.mark.parametrize(
    ("breaking", "said"),
    [
        (_gone_row, "image {id} (prompt[0].images[0]) is no longer stored"),
        (
            _gone_file,
            "image {id} (prompt[0].images[0]) cannot be read from storage: its file is missing",
        ),
        (
            _outside_storage,
            "image {id} (prompt[0].images[0]) cannot be read from storage:"
            " SuspiciousFileOperation (the worker's log has more)",
        ),
        (_not_an_image, "prompt[0].images[0] is not a stored image"),
        (_not_a_list, "prompt[0].images[0] is not a stored image"),
        (_not_a_message, "its prompt cannot be sent: KeyError: 'role'"),
    ],
)
def test_an_image_or_prompt_that_cannot_be_sent_fails_its_item_only_saying_which(
    model_server, push_and_generate, api_for, engineer, breaking, said
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        [
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": "Describe it.",
                        "images": [_data_url(png(color="red"))],
                    }
                ]
            }
        ],
        format="json",
    )
    image = ItemImage.objects.get()
    image_id = image.pk
    breaking(image)

    status = push_and_generate(campaign, [{"prompt": "Say hello."}], ["vision-a"])

    assert status["status"] == "succeeded", status
    assert status["failed_count"] == 1
    [error] = status["errors"]
    assert error["model"] == "vision-a"
    assert error["message"].startswith(said.format(id=image_id)), error["message"]
    if "storage" in said:
        assert "/" not in error["message"], "no path on the server"
    assert ("vision-a", "Describe it.") not in model_server.images, "never asked without it"
    assert Response.objects.get().text == "vision-a answers: Say hello."
