"""An item names a file sent beside it (`upload:<name>`) by the name the client sent, though
Django cleans the names of the files it receives: the reference is cleaned the same way."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from feedback.models import Item, ItemImage

pytestmark = pytest.mark.django_db

BOUNDARY = "----boundary-of-this-test"


def _png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(out, format="PNG")
    return out.getvalue()


def _multipart(items: list[dict], files: dict[str, bytes]) -> bytes:
    """A multipart body whose file names are written as given: a test client would clean
    some of them itself (its own file objects shorten a name over 255 characters)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="items"\r\n\r\n'.encode()
        + json.dumps(items).encode()
        + b"\r\n"
    ]
    for name, data in files.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _post(client, campaign, items: list[dict], files: dict[str, bytes]):
    return client.post(
        f"/api/v1/campaigns/{campaign.pk}/items/",
        _multipart(items, files),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )


def _item(*refs: str) -> dict:
    return {
        "prompt": "Which chart is right?",
        "context": {"images": list(refs)},
        "responses": [{"model": "a", "text": "left"}, {"model": "b", "text": "right"}],
    }


@pytest.mark.parametrize(
    "name",
    [
        "a&amp;b.png",  # an HTML entity, unescaped: a&b.png
        "tab\there.png",  # a character that does not print, dropped
        "C:\\fakepath\\chart.png",  # a Windows folder, dropped
        "図" * 300 + ".png",  # over 255 characters, shortened keeping .png
    ],
    ids=["entity", "tab", "windows-folder", "long"],
)
def test_a_file_is_found_by_the_name_it_was_sent_with(api_for, engineer, pairwise_campaign, name):
    res = _post(api_for(engineer), pairwise_campaign, [_item(f"upload:{name}")], {name: _png()})

    assert res.status_code == 201, res.json()
    assert Item.objects.get().context["images"][0]["width"] == 3


def test_a_file_is_found_by_the_name_django_gave_it_too(api_for, engineer, pairwise_campaign):
    res = _post(
        api_for(engineer), pairwise_campaign, [_item("upload:a&b.png")], {"a&amp;b.png": _png()}
    )

    assert res.status_code == 201, res.json()


def test_a_reference_to_a_file_not_sent_names_the_files_that_were(
    api_for, engineer, pairwise_campaign
):
    client = api_for(engineer)
    files = {"chart.png": _png("red"), "diagram.png": _png("blue")}

    items = [_item("upload:chart.png", "upload:chrat.png"), _item("upload:diagram.png")]
    res = _post(client, pairwise_campaign, items, files)

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[1]": [
            "image names the file 'chrat.png', which was not uploaded; the files sent are "
            "'chart.png', 'diagram.png'"
        ]
    }
    assert ItemImage.objects.count() == 0

    res = client.post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [_item("upload:chart.png")],
        format="json",
    )
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": [
            "image names the file 'chart.png', which was not uploaded; no file was sent"
        ]
    }


def test_an_import_finds_its_files_by_the_names_they_were_sent_with(
    api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    line = json.dumps(_item("upload:a&amp;b.png") | {"external_id": "amp"})
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile("items.jsonl", line.encode() + b"\n"),
                "images": [SimpleUploadedFile("a&amp;b.png", _png(), content_type="image/png")],
            },
            format="multipart",
        )

    assert res.status_code == 202, res.json()
    job = client.get(f"/api/v1/imports/{res.json()['id']}/").json()
    assert job["status"] == "succeeded", job
    assert Item.objects.get(external_id="amp").context["images"][0]["width"] == 3
