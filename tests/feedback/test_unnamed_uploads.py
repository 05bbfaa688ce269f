"""A file sent beside a batch of items that no item names is refused, naming it: most often a
reference misspells it, and it would otherwise be dropped unseen."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from feedback.models import Item, ItemImage

pytestmark = pytest.mark.django_db


def _png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(out, format="PNG")
    return out.getvalue()


def _item(*refs: str) -> dict:
    item = {
        "prompt": "Which chart is right?",
        "responses": [{"model": "a", "text": "left"}, {"model": "b", "text": "right"}],
    }
    return item | {"context": {"images": list(refs)}} if refs else item


def _post(client, campaign, items: list[dict], *files: SimpleUploadedFile):
    return client.post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        {"items": json.dumps(items), "images": list(files)},
        format="multipart",
    )


def test_a_file_no_item_names_is_refused_even_when_it_is_over_the_size_limit(
    api_for, engineer, pairwise_campaign, settings
):
    settings.IMAGE_MAX_BYTES = 10
    res = _post(
        api_for(engineer), pairwise_campaign, [_item()], SimpleUploadedFile("big.png", b"x" * 5000)
    )

    assert res.status_code == 400
    assert res.json()["error"] == {
        "code": "invalid",
        "message": "No item names 'big.png': an item shows a file sent beside it as "
        '"upload:<file name>".',
        "fields": {"images[big.png]": ["no item names this file"]},
    }
    assert Item.objects.count() == 0


def test_a_misspelt_reference_is_shown_beside_the_file_it_missed(
    api_for, engineer, pairwise_campaign
):
    res = _post(
        api_for(engineer),
        pairwise_campaign,
        [_item("upload:chart.png"), _item("upload:diagarm.png")],
        SimpleUploadedFile("chart.png", _png("red")),
        SimpleUploadedFile("diagram.png", _png("blue")),
    )

    assert res.status_code == 400
    error = res.json()["error"]
    assert error["message"] == (
        "No item names 'diagram.png': an item shows a file sent beside it as "
        "\"upload:<file name>\". Items name 'diagarm.png', not sent."
    )
    assert error["fields"] == {"images[diagram.png]": ["no item names this file"]}
    assert ItemImage.objects.count() == 0


def test_a_file_named_as_django_cleaned_it_or_as_it_was_sent_is_named(
    api_for, engineer, pairwise_campaign
):
    res = _post(
        api_for(engineer),
        pairwise_campaign,
        [_item("upload:a&amp;b.png"), _item("upload:c&d.png")],
        SimpleUploadedFile("a&amp;b.png", _png("red")),
        SimpleUploadedFile("c&amp;d.png", _png("blue")),
    )

    assert res.status_code == 201, res.json()
    assert ItemImage.objects.count() == 2
