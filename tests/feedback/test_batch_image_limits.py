"""A batch of items is checked within one web request: its images are held to a number and to
pixels in all, so that checking them ends well within the web worker's timeout. An import is
checked by a worker and has only each image's limits."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from feedback.models import Item, ItemImage

pytestmark = pytest.mark.django_db


def _png(width: int, height: int, color: int = 0, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), color).save(out, format="PNG")
    return out.getvalue()


def _data_url(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def _item(images: list[str]) -> dict:
    return {
        "prompt": "Which chart is right?",
        "context": {"images": images},
        "responses": [{"model": "a", "text": "left"}, {"model": "b", "text": "right"}],
    }


def _files(root) -> set[str]:
    return {str(p) for p in Path(root).rglob("*") if p.is_file()}


def test_a_batch_with_more_images_than_a_request_checks_is_refused_before_any_is_decoded(
    api_for, engineer, pairwise_campaign, settings
):
    settings.IMAGES_BATCH_MAX = 3
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    four = [
        _item([_data_url(_png(2, 2, n)) for n in (1, 2)]),
        _item([_data_url(_png(2, 2, 3)), "upload:chart.png"]),
    ]
    client = api_for(engineer)

    for res in (
        client.post(url, four, format="json"),
        client.post(
            url,
            {
                "items": json.dumps(four),
                "images": [SimpleUploadedFile("chart.png", _png(2, 2, 4))],
            },
            format="multipart",
        ),
    ):
        assert res.status_code == 413
        error = res.json()["error"]
        assert error["code"] == "too_many_images"
        assert error["message"] == (
            "The batch has 4 images; one batch may have at most 3. Send fewer items per batch, "
            "or upload them as a file to imports/, whose images are checked by a worker."
        )
        assert error["fields"] == {"items": ["4 images, more than 3"]}
    assert ItemImage.objects.count() == 0

    assert client.post(url, four[:1], format="json").status_code == 201


def test_a_batch_whose_images_have_too_many_pixels_in_all_is_refused_and_stores_nothing(
    api_for, engineer, pairwise_campaign, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.IMAGES_BATCH_MAX_PIXELS = 1000
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    client = api_for(engineer)
    # 400 pixels each: the third goes past 1,000.
    batch = [_item([_data_url(_png(20, 20, n))]) for n in range(3)]

    res = client.post(url, batch, format="json")

    assert res.status_code == 413
    error = res.json()["error"]
    assert error["code"] == "too_many_pixels"
    assert error["message"].startswith(
        "The images of the batch have more than 1,000 pixels in all (every frame of an "
        "animation counted)"
    )
    assert "upload them as a file to imports/" in error["message"]
    assert error["fields"] == {"items": ["images of more than 1,000 pixels in all"]}
    assert Item.objects.count() == 0
    assert ItemImage.objects.count() == 0
    assert _files(tmp_path) == set()

    assert client.post(url, batch[:2], format="json").status_code == 201


def test_tiny_files_of_many_pixels_are_refused_within_a_fraction_of_the_workers_timeout(
    api_for, engineer, pairwise_campaign
):
    # A 1-bit 5000x5000 PNG is 3 kB and takes about 20 ms to check: 200 of them in one item
    # (0.8 MB of JSON) took 4.4 s, and a 20 MiB body would take minutes.
    tiny = _data_url(_png(5000, 5000, mode="1"))
    assert len(tiny) < 5000

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [_item([tiny] * 200)], format="json"
    )

    assert res.status_code == 413
    assert res.json()["error"]["code"] == "too_many_pixels"
    assert ItemImage.objects.count() == 0


def test_an_import_is_not_held_to_a_batchs_limits(
    api_for, engineer, pairwise_campaign, settings, django_capture_on_commit_callbacks
):
    settings.IMAGES_BATCH_MAX = 1
    settings.IMAGES_BATCH_MAX_PIXELS = 10
    lines = [
        json.dumps(_item([_data_url(_png(8, 8, 1)), "upload:chart.png"]) | {"external_id": "i"})
    ]
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile("items.jsonl", "\n".join(lines).encode() + b"\n"),
                "images": [SimpleUploadedFile("chart.png", _png(8, 8, 2))],
            },
            format="multipart",
        )

    assert res.status_code == 202, res.json()
    assert client.get(f"/api/v1/imports/{res.json()['id']}/").json()["status"] == "succeeded"
    assert len(Item.objects.get(external_id="i").context["images"]) == 2
