"""Images of rows that are not stored (invalid and skipped, duplicates, an import or batch
refused whole) are not kept: no row, no file, nothing served. An image a stored item uses stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback.models import Item, ItemImage
from tests.feedback.import_files import item_object, jsonl
from tests.feedback.pictures import data_url, png

pytestmark = pytest.mark.django_db


def _png(color: str) -> bytes:
    return png(color=color)


def _data_url(color: str) -> str:
    return data_url(png(color=color))


def _asking(n: int, *colors: str) -> list[dict]:
    """A chat prompt whose message carries images of these colors."""
    return [{"role": "user", "content": f"Question {n}?", "images": list(map(_data_url, colors))}]


def _without_a_model(n: int, **extra) -> dict:
    """An item whose second response has no model: invalid."""
    return item_object(n, responses=[{"model": "m-a", "text": "A"}, {"text": "B"}], **extra)


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """This test's own storage."""
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _image_files(media: Path) -> set[str]:
    return {str(p.relative_to(media)) for p in (media / "item-images").rglob("*") if p.is_file()}


def _stored_images() -> set[str]:
    return {image.file.name for image in ItemImage.objects.all()}


def _image_ids(item: Item) -> set[int]:
    from feedback.images import item_image_ids

    return item_image_ids(
        prompt=item.prompt,
        context=item.context,
        response_images=item.responses.values_list("images", flat=True),
    )


def test_it_keeps_no_image_of_a_row_skipped_as_invalid(import_status, media):
    status = import_status(
        "items.jsonl",
        jsonl(
            _without_a_model(1, prompt=_asking(1, "red")),
            _without_a_model(2, context={"images": [_data_url("blue")]}),
            item_object(3),
            # A good image beside a corrupt one: the good one is stored before the other fails.
            item_object(4, context={"images": [_data_url("green"), "data:image/png;base64,AAAA"]}),
        ),
        on_error="skip",
    )

    assert status["status"] == "succeeded", status
    assert status["message"] == "Imported 1 item, skipped 3 invalid rows."
    assert [e["field"] for e in status["errors"]] == [
        "responses[1].model",
        "responses[1].model",
        "context.images[1]",
    ]
    assert ItemImage.objects.count() == 0
    assert _image_files(media) == set()


def test_it_keeps_no_image_of_a_row_skipped_as_a_duplicate(import_status, media):
    first = import_status("items.jsonl", jsonl(item_object(1)))
    assert first["created"] == 1

    # q-1 is in the campaign already: this row is a duplicate whatever its content, and the
    # image it brings, new to the campaign, is stored before that is known.
    status = import_status("items.jsonl", jsonl(item_object(1, prompt=_asking(1, "red"))))

    assert status["status"] == "succeeded", status
    assert (status["created"], status["duplicates"]) == (0, 1)
    assert ItemImage.objects.count() == 0
    assert _image_files(media) == set()


@pytest.mark.parametrize("chunk_items", [5000, 1], ids=["one chunk", "a chunk a row"])
def test_an_image_a_stored_item_uses_stays(
    import_status, api_for, engineer, pairwise_campaign, media, monkeypatch, chunk_items
):
    monkeypatch.setattr("feedback.imports.CHUNK_ITEMS", chunk_items)
    earlier = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [item_object(1, prompt=_asking(1, "green"))],
        format="json",
    )
    assert earlier.status_code == 201, earlier.json()
    green = ItemImage.objects.get()

    # Line 1 is invalid: of its images, red is also line 2's (stored), green an earlier
    # item's; only blue is no stored item's.
    status = import_status(
        "items.jsonl",
        jsonl(
            _without_a_model(2, prompt=_asking(2, "red", "blue", "green")),
            item_object(3, prompt=_asking(3, "red")),
        ),
        on_error="skip",
    )

    assert status["message"] == "Imported 1 item, skipped 1 invalid row.", status
    red = Item.objects.get(external_id="q-3")
    assert _image_ids(red) | {green.pk} == set(ItemImage.objects.values_list("pk", flat=True))
    assert _image_ids(Item.objects.get(external_id="q-1")) == {green.pk}
    assert _image_files(media) == _stored_images()
    client = api_for(engineer)
    for image in ItemImage.objects.all():
        assert client.get(f"/api/v1/images/{image.pk}/").status_code == 200


def test_an_import_refused_whole_leaves_no_image_behind(import_status, media):
    status = import_status(
        "items.jsonl",
        jsonl(item_object(1, prompt=_asking(1, "red")), _without_a_model(2)),
    )

    assert status["status"] == "failed", status
    assert ItemImage.objects.count() == 0
    assert _image_files(media) == set(), "the rows rolled back; their files go too"


def test_a_batch_keeps_no_image_of_an_item_skipped_as_a_duplicate(
    api_for, engineer, pairwise_campaign, media
):
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    assert client.post(url, [item_object(1)], format="json").status_code == 201

    res = client.post(
        url,
        [
            item_object(1, prompt=_asking(1, "red", "blue")),  # q-1 is stored: a duplicate
            item_object(2, prompt=_asking(2, "blue")),
        ],
        format="json",
    )

    assert res.status_code == 201, res.json()
    assert [d["index"] for d in res.json()["duplicates"]] == [0]
    (blue,) = _image_ids(Item.objects.get(external_id="q-2"))
    assert set(ItemImage.objects.values_list("pk", flat=True)) == {blue}
    assert _image_files(media) == _stored_images()


def test_a_refused_batch_leaves_no_image_behind(api_for, engineer, pairwise_campaign, media):
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {
            "items": json.dumps([item_object(1, context={"images": ["upload:d.png"]}), {}]),
            "images": [SimpleUploadedFile("d.png", _png("red"), content_type="image/png")],
        },
        format="multipart",
    )

    assert res.status_code == 400
    assert ItemImage.objects.count() == 0
    assert _image_files(media) == set()
