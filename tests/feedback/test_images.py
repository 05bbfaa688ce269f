"""Images in items: checked with Pillow, stored once, served from our origin with a fixed type."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from feedback.models import Item, ItemImage, Response
from tests.db_locks import another_session_waits_for_a_lock
from tests.db_stats import moved_past_the_statistics, rows_read
from tests.feedback.factories import CampaignFactory
from tests.feedback.pictures import data_url as _data_url
from tests.feedback.pictures import png as _png

pytestmark = pytest.mark.django_db


def _item(**extra):
    return {
        "prompt": [{"role": "user", "content": "Which chart is right?"}],
        "responses": [{"model": "a", "text": "left"}, {"model": "b", "text": "right"}],
    } | extra


def test_base64_images_in_prompt_context_and_response_are_stored_and_served(
    api_for, engineer, pairwise_campaign
):
    png = _png()
    body = _item(
        prompt=[{"role": "user", "content": "Look", "images": [_data_url(png)]}],
        context={"images": [_data_url(png)], "note": "same image twice"},
        responses=[
            {"model": "a", "text": "left", "images": [_data_url(_png(color="blue"))]},
            {"model": "b", "text": "right"},
        ],
    )
    client = api_for(engineer)
    res = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [body], format="json")

    assert res.status_code == 201, res.json()
    item = Item.objects.get()
    stored = item.prompt[0]["images"][0]
    assert stored["content_type"] == "image/png"
    assert (stored["width"], stored["height"]) == (4, 3)
    assert item.context["images"][0]["id"] == stored["id"], "one stored copy per campaign"
    assert ItemImage.objects.count() == 2
    response = Response.objects.get(model_name="a")
    assert response.images[0]["id"] != stored["id"]

    served = client.get(f"/api/v1/images/{stored['id']}/")
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert b"".join(served.streaming_content) == png


def test_a_corrupt_image_is_a_clear_per_item_error_and_nothing_is_stored(
    api_for, engineer, pairwise_campaign
):
    truncated = _png(40, 40)[:60]
    body = [
        _item(),
        _item(context={"images": [_data_url(truncated)]}),
        _item(responses=[{"model": "a", "text": "x", "images": ["data:image/png;base64,@@@"]}]),
    ]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", body, format="json"
    )

    assert res.status_code == 400
    fields = res.json()["error"]["fields"]
    # Item 2 has one response of the pairwise campaign's two: named beside its image.
    assert set(fields) == {
        "items[1].context.images[0]",
        "items[2].responses[0].images[0]",
        "items[2].responses",
    }
    assert (
        "corrupt" in fields["items[1].context.images[0]"][0]
        or "readable" in (fields["items[1].context.images[0]"][0])
    )
    assert fields["items[2].responses[0].images[0]"] == ["image is not valid base64"]
    assert Item.objects.count() == 0
    assert ItemImage.objects.count() == 0


def test_a_response_whose_images_are_null_is_refused_in_a_batch_and_a_file_alike(
    api_for, engineer, pairwise_campaign, import_status
):
    # It was a 400 in a batch, imported from a file, and refused in the file again once
    # another part of the item had images: null is no list of images, wherever it is sent.
    plain = {"model": "b", "text": "y"}
    nulled = {"model": "a", "text": "x", "images": None}
    items = [
        _item(responses=[nulled, plain]),
        _item(responses=[nulled, plain], context={"images": [_data_url(_png(8, 8))]}),
    ]
    said = ['must be a list of images ("data:image/...;base64,..." or "upload:<file name>")']

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", items, format="json"
    )
    status = import_status(
        "items.jsonl", "".join(json.dumps(i) + "\n" for i in items).encode(), on_error="skip"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].responses[0].images": said,
        "items[1].responses[0].images": said,
    }
    assert [(e["line"], e["field"], e["message"]) for e in status["errors"]] == [
        (1, "responses[0].images", said[0]),
        (2, "responses[0].images", said[0]),
    ]
    assert Item.objects.count() == 0


def test_an_oversized_or_wrong_type_image_is_refused(
    api_for, engineer, pairwise_campaign, settings
):
    settings.IMAGE_MAX_BYTES = 500
    big = _png(300, 300, "white")
    noise = Image.effect_noise((200, 200), 100).convert("RGB")
    out = io.BytesIO()
    noise.save(out, format="PNG")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    body = [
        _item(context={"images": [_data_url(out.getvalue())]}),
        _item(context={"images": [_data_url(svg, "image/svg+xml")]}),
    ]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", body, format="json"
    )

    fields = res.json()["error"]["fields"]
    assert "an image may have at most 500" in fields["items[0].context.images[0]"][0]
    assert "not a readable PNG, JPEG, GIF or WebP" in fields["items[1].context.images[0]"][0]
    settings.IMAGE_MAX_BYTES = 10_000_000
    settings.IMAGE_MAX_SIDE = 100
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [_item(context={"images": [_data_url(big)]})],
        format="json",
    )
    assert "300x300 pixels" in res.json()["error"]["fields"]["items[0].context.images[0]"][0]
    assert ItemImage.objects.count() == 0


def test_images_uploaded_beside_a_batch_are_named_upload_colon_filename(
    api_for, engineer, pairwise_campaign
):
    body = [_item(context={"images": ["upload:chart.png"]})]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {
            "items": json.dumps(body),
            "images": [SimpleUploadedFile("chart.png", _png(), content_type="image/png")],
        },
        format="multipart",
    )

    assert res.status_code == 201, res.json()
    assert Item.objects.get().context["images"][0]["width"] == 4
    missing = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {"items": json.dumps([_item(context={"images": ["upload:nope.png"]})])},
        format="multipart",
    )
    assert missing.json()["error"]["fields"] == {
        "items[0].context.images[0]": [
            "image names the file 'nope.png', which was not uploaded; no file was sent"
        ]
    }


def test_images_uploaded_beside_an_import_file(
    api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks
):
    line = json.dumps(_item(external_id="img-1", context={"images": ["upload:diagram.png"]}))
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile("items.jsonl", line.encode() + b"\n"),
                "images": [SimpleUploadedFile("diagram.png", _png(8, 8), content_type="image/png")],
            },
            format="multipart",
        )
    status = client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    assert status["status"] == "succeeded", status
    assert Item.objects.get(external_id="img-1").context["images"][0]["width"] == 8


def test_images_beside_an_import_count_against_their_own_limit_not_the_files(
    api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks, settings
):
    from feedback.models import ImportJob

    image = _png(8, 8)
    line = json.dumps(_item(external_id="img-1", context={"images": ["upload:diagram.png"]}))
    file = line.encode() + b"\n"
    client = api_for(engineer)

    def send():
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
                {
                    "file": SimpleUploadedFile("items.jsonl", file),
                    "images": [SimpleUploadedFile("diagram.png", image, content_type="image/png")],
                },
                format="multipart",
            )

    # The file and its image are over the file's limit together, not each on its own.
    settings.IMPORT_MAX_BYTES = len(file) + 10
    settings.IMPORT_IMAGES_MAX_BYTES = len(image)
    res = send()
    assert res.status_code == 202, res.json()
    assert client.get(f"/api/v1/imports/{res.json()['id']}/").json()["status"] == "succeeded"

    settings.IMPORT_IMAGES_MAX_BYTES = len(image) - 1
    res = send()
    assert res.status_code == 413
    error = res.json()["error"]
    assert error["fields"] == {
        "images": [f"{len(image):,} bytes in all, more than {len(image) - 1:,}"]
    }
    assert ImportJob.objects.count() == 1


def test_an_import_request_over_both_limits_is_refused_from_its_length(
    api_for, engineer, pairwise_campaign, settings
):
    from feedback.imports import MULTIPART_SLACK_BYTES
    from feedback.models import ImportJob

    settings.IMPORT_MAX_BYTES = 1000
    settings.IMPORT_IMAGES_MAX_BYTES = 1000
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {"file": SimpleUploadedFile("items.jsonl", b" " * (MULTIPART_SLACK_BYTES + 2000))},
        format="multipart",
    )

    assert res.status_code == 413
    assert res.json()["error"]["message"].startswith("The request is ")
    assert list(res.json()["error"]["fields"]) == ["request"]
    assert ImportJob.objects.count() == 0


def test_more_images_than_django_takes_are_refused_in_the_apis_format(
    api_for, engineer, pairwise_campaign, settings
):
    from feedback.models import ImportJob

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    images = [SimpleUploadedFile(f"i{n}.png", _png(), content_type="image/png") for n in range(3)]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {"file": SimpleUploadedFile("items.jsonl", b"{}\n"), "images": images},
        format="multipart",
    )

    assert res.status_code == 400
    assert res.json()["error"] == {
        "code": "too_many_files",
        "message": "The request carries more than 3 files; send at most 3.",
        "fields": {"images": ["more than 3 files"]},
    }
    assert ImportJob.objects.count() == 0


def test_an_image_is_served_only_to_those_who_see_its_campaign(api_for, engineer, expert):
    hidden = CampaignFactory(required_skills=["radiology"], created_by=engineer)
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{hidden.pk}/items/",
        [_item(context={"images": [_data_url(_png())]})],
        format="json",
    )
    image_id = Item.objects.get(pk=res.json()["item_ids"][0]).context["images"][0]["id"]

    assert api_for(expert).get(f"/api/v1/images/{image_id}/").status_code == 404
    assert api_for(engineer).get(f"/api/v1/images/{image_id}/").status_code == 200
    assert api_for(engineer).get("/api/v1/images/999999/").status_code == 404


def test_an_expert_gets_only_the_images_of_the_item_they_hold(
    api_for, engineer, expert, other_expert, pairwise_campaign
):
    """Seeing a campaign is not seeing its items: an expert is served the images of the item
    they hold a claim on, and no other, whatever id they try."""
    from reviews.models import Assignment

    def item(n: int, **extra):
        return _item(
            external_id=f"img-{n}",
            prompt=[
                {"role": "user", "content": "Look", "images": [_data_url(_png(color=f"#0{n}0"))]}
            ],
            context={"images": [_data_url(_png(color=f"#00{n}"))]},
            responses=[
                {"model": "a", "text": "l", "images": [_data_url(_png(color=f"#{n}00"))]},
                {"model": "b", "text": "r"},
            ],
            **extra,
        )

    engineer_api = api_for(engineer)
    res = engineer_api.post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [item(1), item(2), item(3, is_gold=True, gold_answer={"chosen_position": 0})],
        format="json",
    )
    assert res.status_code == 201, res.json()

    def image_ids(item_id: int) -> list[int]:
        found = Item.objects.get(pk=item_id)
        ids = [found.prompt[0]["images"][0]["id"], found.context["images"][0]["id"]]
        return ids + [i["id"] for r in found.responses.all() for i in r.images]

    client = api_for(expert)
    everything = sorted(ItemImage.objects.values_list("pk", flat=True))
    assert len(everything) == 9
    # Eligible for the campaign, holding nothing in it: no image at all, the same 404 as for
    # an image that does not exist.
    for image_id in everything:
        refused = client.get(f"/api/v1/images/{image_id}/")
        assert refused.status_code == 404
        assert refused.json()["error"]["message"] == f"No image {image_id}."

    mine = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    theirs = api_for(other_expert).post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    held = image_ids(mine["item"]["id"])
    assert {client.get(f"/api/v1/images/{i}/").status_code for i in held} == {200}
    # Another expert's item and the gold item stay out of reach.
    others = [i for i in everything if i not in held]
    assert set(image_ids(theirs["item"]["id"])) <= set(others)
    assert {client.get(f"/api/v1/images/{i}/").status_code for i in others} == {404}
    # Those who see every campaign are served every image.
    assert {engineer_api.get(f"/api/v1/images/{i}/").status_code for i in everything} == {200}

    # Once the item is handed in, its images are no longer served to the expert.
    Assignment.objects.filter(pk=mine["assignment"]["id"]).update(status="submitted")
    assert {client.get(f"/api/v1/images/{i}/").status_code for i in held} == {404}


def _claim_item_with_an_image_in_each_place(api_for, engineer, expert, campaign) -> dict:
    """An item with a stored image in its prompt, its context and one response, claimed by
    the expert: the `next/` answer."""
    body = _item(
        prompt=[
            {"role": "user", "content": "Which chart is right?", "images": [_data_url(_png())]}
        ],
        context={"images": [_data_url(_png(color="green"))], "note": "the data"},
        responses=[
            {"model": "a", "text": "left", "images": [_data_url(_png(color="blue"))]},
            {"model": "b", "text": "right"},
        ],
    )
    res = api_for(engineer).post(f"/api/v1/campaigns/{campaign.pk}/items/", [body], format="json")
    assert res.status_code == 201, res.json()
    return api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()


def test_a_claimed_item_gives_each_of_its_images_with_its_address(
    api_for, engineer, expert, pairwise_campaign
):
    payload = _claim_item_with_an_image_in_each_place(api_for, engineer, expert, pairwise_campaign)

    item = payload["item"]
    images = (
        item["prompt"][0]["images"]
        + item["context"]["images"]
        + [i for r in item["responses"] for i in r["images"]]
    )
    assert len(images) == 3
    for image in images:
        assert image["url"] == f"/api/v1/images/{image['id']}/"
        served = api_for(expert).get(image["url"])
        assert served.status_code == 200
        assert served["Content-Type"] == "image/png"
    # The stored item is unchanged: the addresses are added to the answer only.
    assert "url" not in Item.objects.get().prompt[0]["images"][0]


def test_the_review_page_shows_the_items_stored_images_from_our_origin(
    api_for, engineer, expert, pairwise_campaign
):
    payload = _claim_item_with_an_image_in_each_place(api_for, engineer, expert, pairwise_campaign)
    item = payload["item"]
    label = next(r["label"] for r in item["responses"] if r["images"])
    expected = {
        item["prompt"][0]["images"][0]["url"]: "Prompt image 1",
        item["context"]["images"][0]["url"]: "Context image 1",
        item["responses"][0 if label == "A" else 1]["images"][0][
            "url"
        ]: f"Response {label}, image 1",
    }

    client = Client()
    client.force_login(expert)
    page = client.get(f"/review/a/{payload['assignment']['id']}/").content.decode()

    shown = dict(re.findall(r'<img class="inline-image" src="([^"]+)" alt="([^"]*)"', page))
    assert {src: shown.get(src) for src in expected} == expected
    assert "is not shown" not in page
    for src in expected:
        assert client.get(src).status_code == 200


def test_the_sweep_deletes_files_no_row_names_and_keeps_stored_images(
    api_for, engineer, pairwise_campaign, settings, tmp_path, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from feedback.images import images_sweep_orphans

    settings.MEDIA_ROOT = str(tmp_path)  # this test's own files only
    client = api_for(engineer)
    kept = client.post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [_item(context={"images": [_data_url(_png(color="green"))]})],
        format="json",
    )
    assert kept.status_code == 201
    # A refused batch deletes the files of its images itself (tests/feedback/
    # test_unkept_images.py); a worker that died in an import leaves its files, with no row.
    default_storage.save("item-images/2026/01/left.png", ContentFile(_png(color="blue")))
    with django_capture_on_commit_callbacks(execute=True):
        imported = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile(
                    "items.jsonl",
                    json.dumps(_item(context={"images": ["upload:d.png"]})).encode() + b"\n",
                ),
                "images": [SimpleUploadedFile("d.png", _png(6, 6), content_type="image/png")],
            },
            format="multipart",
        )
    assert client.get(f"/api/v1/imports/{imported.json()['id']}/").json()["status"] == "succeeded"
    stored = {image.file.name for image in ItemImage.objects.all()}

    def images_on_disk():  # every file but the import file
        files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
        return {name for name in files if not name.endswith(".jsonl")}

    on_disk = images_on_disk()
    staged = on_disk - stored
    assert len(stored) == 2
    assert stored <= on_disk
    assert len(staged) == 2, f"one orphan image and one staged upload, found {staged}"

    assert images_sweep_orphans() == {"orphan_images": 0, "staged_uploads": 0}, "too young"
    assert images_sweep_orphans(older_than=timedelta(seconds=-60)) == {
        "orphan_images": 1,
        "staged_uploads": 1,
    }
    assert images_on_disk() == stored
    for image in ItemImage.objects.all():
        assert default_storage.exists(image.file.name)
        assert client.get(f"/api/v1/images/{image.pk}/").status_code == 200


def test_a_base64_image_over_the_limit_is_refused_with_its_exact_size(settings):
    from feedback.images import ImageRejected, _decode_data_url

    settings.IMAGE_MAX_BYTES = 10
    for size in (8, 9, 10):  # padding "=", none and "=="
        assert len(_decode_data_url(_data_url(b"x" * size))) == size
    for size in (11, 12, 13):
        with pytest.raises(ImageRejected, match=f"is {size} bytes; an image may have at most 10"):
            _decode_data_url(_data_url(b"x" * size))


def test_an_uploaded_image_over_the_limit_is_refused_with_its_exact_size(
    api_for, engineer, pairwise_campaign, settings
):
    settings.IMAGE_MAX_BYTES = 10
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {
            "items": json.dumps([_item(context={"images": ["upload:big.png"]})]),
            "images": [SimpleUploadedFile("big.png", b"x" * 5000, content_type="image/png")],
        },
        format="multipart",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": ["image is 5,000 bytes; an image may have at most 10"]
    }
    assert Item.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_transactions_storing_the_same_new_image_at_once_share_one_stored_image():
    # The first stores the image and holds its transaction open; the second, not seeing that
    # row yet, inserts too and waits on the unique constraint; once the first commits, the
    # second gives way to it instead of failing.
    import hashlib
    import threading
    from datetime import datetime

    from django.core.files.storage import default_storage
    from django.db import connection, transaction

    from feedback.images import image_store

    campaign = CampaignFactory()
    data = _png(5, 5, "blue")
    digest = hashlib.sha256(data).hexdigest()
    folder = datetime.now().strftime("item-images/%Y/%m")  # as FileField names it

    def files_of(name: str) -> set[str]:
        if not default_storage.exists(folder):
            return set()
        return {f"{folder}/{f}" for f in default_storage.listdir(folder)[1] if f.startswith(name)}

    before = files_of(digest)
    stored, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"], results["first_stored_it"] = image_store(
                    campaign=campaign, data=data
                )
                stored.set()
                release.wait(10)
        except Exception as exc:
            results["first"] = exc
        finally:
            stored.set()
            connection.close()

    def second() -> None:
        try:
            with transaction.atomic():
                results["second"], results["second_stored_it"] = image_store(
                    campaign=campaign, data=data
                )
        except Exception as exc:
            results["second"] = exc
        finally:
            connection.close()

    one = threading.Thread(target=first)
    one.start()
    assert stored.wait(10)
    two = threading.Thread(target=second)
    two.start()
    if not another_session_waits_for_a_lock(10):
        pytest.fail("the second store never waited on the first one's row")
    release.set()
    one.join(10)
    two.join(10)

    assert isinstance(results["first"], ItemImage), results["first"]
    assert isinstance(results["second"], ItemImage), results["second"]
    assert results["second"].pk == results["first"].pk
    assert (results["first_stored_it"], results["second_stored_it"]) == (True, False)
    assert ItemImage.objects.filter(campaign=campaign).count() == 1
    assert files_of(digest) - before == {results["first"].file.name}, "the second file is gone"


def test_an_image_is_found_by_its_digest_when_the_statistics_predate_the_campaign():
    """A campaign newer than the table's statistics looks empty to the planner, as during a
    large import into a new campaign (the import's own rows are not analyzed before it
    commits): every image it stores is first looked up by its digest, which reads that
    image's row alone, not every image the campaign has stored so far."""
    from feedback.images import image_store

    campaign = CampaignFactory()
    stored, created = image_store(campaign=campaign, data=_png(5, 5, "blue"))
    assert created
    ItemImage.objects.bulk_create(
        ItemImage(
            campaign=campaign,
            sha256=f"{n:064x}",
            content_type="image/png",
            width=1,
            height=1,
            size_bytes=1,
            file=f"item-images/other-{n}.png",
        )
        for n in range(300)
    )
    newer = CampaignFactory()
    moved_past_the_statistics(ItemImage.objects.filter(campaign=campaign), newer)

    before = rows_read("feedback_itemimage")
    found, created = image_store(campaign=newer, data=_png(5, 5, "blue"))

    assert (found.pk, created) == (stored.pk, False)
    assert rows_read("feedback_itemimage") - before == 1


# --- the pixel limit, and the memory a check takes ----------------------------------------------


def _webp_declaring(width: int, height: int) -> bytes:
    """A 34-byte lossless WebP of one colour that decodes to width x height pixels.

    A one-colour VP8L stream spends no bits per pixel, so the size in its header is all that
    differs between 16x16 and 8192x8192: made this way, the test costs no memory itself.
    """
    out = io.BytesIO()
    Image.new("RGBA", (16, 16)).save(out, format="WEBP", lossless=True)
    data = bytearray(out.getvalue())
    assert data[12:16] == b"VP8L"
    assert data[20] == 0x2F  # the lossless signature; the size follows
    header = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (header | (width - 1) | (height - 1) << 14).to_bytes(4, "little")
    return bytes(data)


# Run in a fresh process: Pillow allocates in C, where tracemalloc does not look. The peak is
# the process image's own (VmHWM): ru_maxrss would start from this process's, as exec keeps it.
_MEASURE_CHECK = """
import sys
import django
django.setup()
from PIL import Image
from feedback.images import ImageRejected, image_check
Image.init()

def peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
before = peak_kb()
try:
    outcome = repr(image_check(data))
except ImageRejected as exc:
    outcome = f"refused: {exc}"
print((peak_kb() - before) // 1024, outcome)
"""


def _check_in_a_fresh_process(data: bytes, tmp_path) -> tuple[int, str]:
    """(MB the peak memory grew by during image_check, its result) with the default settings."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    path = tmp_path / "image"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_CHECK, str(path)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    grown, outcome = result.stdout.strip().split(" ", 1)
    return int(grown), outcome


def test_an_image_over_the_pixel_limit_is_refused_before_a_pixel_is_decoded(tmp_path):
    bomb = _webp_declaring(8192, 8192)  # within IMAGE_MAX_SIDE; decoding it takes ~1 GB

    grown_mb, outcome = _check_in_a_fresh_process(bomb, tmp_path)

    assert outcome == (
        "refused: is 8192x8192 pixels, 67,108,864 in all; an image may have at most 25,000,000"
    )
    assert grown_mb < 30, f"a {len(bomb)}-byte image took {grown_mb} MB to check"


def test_a_jpeg_is_checked_at_an_eighth_of_its_size(tmp_path):
    photo = io.BytesIO()
    Image.new("RGB", (4000, 3000), "white").save(photo, format="JPEG", quality=50)

    grown_mb, outcome = _check_in_a_fresh_process(photo.getvalue(), tmp_path)

    assert outcome == "('image/jpeg', 4000, 3000)", "the size is the picture's, not the draft's"
    # Decoded whole, the 12-megapixel picture takes 48 MB; at 1/8 scale, under 1 MB.
    assert grown_mb < 16, f"a 12-megapixel JPEG took {grown_mb} MB to check"


def test_an_item_with_too_many_pixels_names_the_image(api_for, engineer, pairwise_campaign):
    images = [_data_url(_png()), _data_url(_webp_declaring(8192, 8192), "image/webp")]
    body = [_item(), _item(prompt=[{"role": "user", "content": "Q", "images": images}])]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", body, format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[1].prompt[0].images[1]": [
            "image is 8192x8192 pixels, 67,108,864 in all; an image may have at most 25,000,000"
        ]
    }
    assert Item.objects.count() == 0
    assert ItemImage.objects.count() == 0


def test_an_image_over_pillows_own_limit_gets_the_same_kind_of_message(settings):
    from PIL import Image as PILImage

    from feedback.images import ImageRejected, image_check

    settings.IMAGE_MAX_SIDE = 16383
    with pytest.raises(ImageRejected) as refused:
        image_check(_webp_declaring(16000, 16000))
    assert str(refused.value) == (
        f"has more than {PILImage.MAX_IMAGE_PIXELS:,} pixels; an image may have at most 25,000,000"
    )


def test_a_jpeg_with_a_multi_picture_segment_is_a_jpeg(api_for, engineer, pairwise_campaign):
    # Phones and cameras add an MPF segment (a depth map, a preview); Pillow calls the file MPO.
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (32, 24), "blue")
    out = io.BytesIO()
    first.save(out, format="MPO", save_all=True, append_images=[second])
    client = api_for(engineer)
    res = client.post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [_item(context={"images": [_data_url(out.getvalue(), "image/jpeg")]})],
        format="json",
    )

    assert res.status_code == 201, res.json()
    stored = Item.objects.get().context["images"][0]
    assert (stored["content_type"], stored["width"], stored["height"]) == ("image/jpeg", 64, 48)
    assert ItemImage.objects.get().file.name.endswith(".jpg")
    served = client.get(f"/api/v1/images/{stored['id']}/")
    assert served["Content-Type"] == "image/jpeg"
    # Stored as its first picture (tests/feedback/test_image_metadata.py).
    with Image.open(io.BytesIO(b"".join(served.streaming_content))) as first_picture:
        assert (first_picture.format, first_picture.size) == ("JPEG", (64, 48))


# --- the images beside a batch or an import -------------------------------------------------------


def _media_files(root) -> set[str]:
    from pathlib import Path

    return {str(p) for p in Path(root).rglob("*") if p.is_file()}


def test_two_images_with_one_name_beside_a_batch_are_refused(api_for, engineer, pairwise_campaign):
    # Two folders' 0001.png arrive with one name: which one an item means would be a guess.
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {
            "items": json.dumps([_item(context={"images": ["upload:0001.png"]})]),
            "images": [
                SimpleUploadedFile("a/0001.png", _png(color="red"), content_type="image/png"),
                SimpleUploadedFile("b/0001.png", _png(color="blue"), content_type="image/png"),
            ],
        },
        format="multipart",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"images[0001.png]": ["two files have this name"]}
    assert "'0001.png'" in res.json()["error"]["message"]
    assert Item.objects.count() == 0
    assert ItemImage.objects.count() == 0


def test_images_beside_a_batch_are_held_to_their_total(
    api_for, engineer, pairwise_campaign, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    red, blue = _png(color="red"), _png(color="blue")

    def send():
        return api_for(engineer).post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
            {
                "items": json.dumps(
                    [_item(context={"images": ["upload:red.png", "upload:blue.png"]})]
                ),
                "images": [
                    SimpleUploadedFile("red.png", red, content_type="image/png"),
                    SimpleUploadedFile("blue.png", blue, content_type="image/png"),
                ],
            },
            format="multipart",
        )

    total = len(red) + len(blue)
    settings.IMPORT_IMAGES_MAX_BYTES = total - 1
    res = send()
    assert res.status_code == 413
    error = res.json()["error"]
    assert error["code"] == "file_too_large"
    assert error["fields"] == {"images": [f"{total:,} bytes in all, more than {total - 1:,}"]}
    assert "another batch" in error["message"]
    assert Item.objects.count() == 0
    assert _media_files(tmp_path) == set()

    settings.IMPORT_IMAGES_MAX_BYTES = total
    assert send().status_code == 201
    assert ItemImage.objects.count() == 2


def test_a_batch_request_over_its_limits_is_refused_from_its_length(
    api_for, engineer, pairwise_campaign, settings
):
    from feedback.imports import MULTIPART_SLACK_BYTES

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.IMPORT_IMAGES_MAX_BYTES = 1000
    declared = 1000 + 1000 + MULTIPART_SLACK_BYTES + 1
    # The body is small; the header says more than the limits allow. Reading the body past
    # its end would fail the test client's request, so the 413 comes from the header alone.
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {
            "items": json.dumps([_item(context={"images": ["upload:chart.png"]})]),
            "images": [SimpleUploadedFile("chart.png", _png(), content_type="image/png")],
        },
        format="multipart",
        CONTENT_LENGTH=str(declared),
    )

    assert res.status_code == 413
    error = res.json()["error"]
    assert error["message"].startswith(f"The request is {declared:,} bytes; a batch takes")
    assert error["fields"] == {
        "request": [f"{declared:,} bytes, more than the items and images allow"]
    }
    assert Item.objects.count() == 0


def test_two_images_with_one_name_beside_an_import_are_refused(
    api_for, engineer, pairwise_campaign, settings, tmp_path
):
    from feedback.models import ImportJob

    settings.MEDIA_ROOT = str(tmp_path)
    line = json.dumps(_item(context={"images": ["upload:0001.png"]}))
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {
            "file": SimpleUploadedFile("items.jsonl", line.encode() + b"\n"),
            "images": [
                SimpleUploadedFile("0001.png", _png(color="red"), content_type="image/png"),
                SimpleUploadedFile("0001.png", _png(color="blue"), content_type="image/png"),
            ],
        },
        format="multipart",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"images[0001.png]": ["two files have this name"]}
    assert ImportJob.objects.count() == 0
    assert _media_files(tmp_path) == set()


def test_a_refused_import_leaves_no_file_behind(
    api_for, engineer, pairwise_campaign, settings, tmp_path
):
    from feedback.models import ImportJob

    settings.MEDIA_ROOT = str(tmp_path)
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {
            "file": SimpleUploadedFile("items.jsonl", b'{"prompt": "q"}\n' * 1000),
            "images": [
                SimpleUploadedFile("ok.png", _png(), content_type="image/png"),
                SimpleUploadedFile("a/same.png", _png(), content_type="image/png"),
                SimpleUploadedFile("b/same.png", _png(color="blue"), content_type="image/png"),
            ],
        },
        format="multipart",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"images[same.png]": ["two files have this name"]}
    assert ImportJob.objects.count() == 0
    assert _media_files(tmp_path) == set()


@pytest.mark.parametrize("on_error", ["skip", "abort"])
def test_an_image_file_over_the_limit_is_an_error_of_each_row_naming_it(
    api_for,
    engineer,
    pairwise_campaign,
    settings,
    tmp_path,
    on_error,
    django_capture_on_commit_callbacks,
):
    """Sent beside an import, an image too large is not the request's error but each row's
    that names it, as an image inside a row is: skipping imports the rows without it."""
    settings.MEDIA_ROOT = str(tmp_path)
    settings.IMAGE_MAX_BYTES = 1000
    big = _png(width=200, height=200) + b"\0" * 2000
    rows = [
        {
            "prompt": f"q{n}",
            "context": {"images": [image]} if image else {},
            "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
        }
        for n, image in enumerate(["upload:big.png", "upload:ok.png", None, "upload:big.png"])
    ]
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile(
                    "items.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
                ),
                "images": [
                    SimpleUploadedFile("ok.png", _png(), content_type="image/png"),
                    SimpleUploadedFile("big.png", big, content_type="image/png"),
                ],
                "on_error": on_error,
            },
            format="multipart",
        )
    assert res.status_code == 202, res.json()
    status = client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    too_big = f"image is {len(big):,} bytes; an image may have at most 1,000"
    assert status["errors"] == [
        {"line": line, "field": "context.images[0]", "message": too_big} for line in (1, 4)
    ]
    if on_error == "skip":
        assert status["status"] == "succeeded", status
        assert sorted(Item.objects.values_list("prompt", flat=True)) == ["q1", "q2"]
    else:
        assert status["status"] == "failed", status
        assert not Item.objects.exists()
    assert ItemImage.objects.count() == (1 if on_error == "skip" else 0)
    # Nothing of the oversized image is stored as an item's image.
    stored = {f for f in _media_files(tmp_path) if "/item-images/" in f}
    assert len(stored) == ItemImage.objects.count()


def test_an_import_whose_row_cannot_be_saved_deletes_its_files(
    engineer, pairwise_campaign, settings, tmp_path
):
    from django.db import DataError

    from feedback.imports import import_create
    from feedback.models import ImportJob

    settings.MEDIA_ROOT = str(tmp_path)
    # PostgreSQL cannot store NUL in the job's {name: path} of images, which is saved after the
    # import file and the images. (Django's upload parser drops control characters from a file
    # name, so the service is called directly.)
    with pytest.raises(DataError):
        import_create(
            actor=engineer,
            campaign=pairwise_campaign,
            upload=SimpleUploadedFile("items.jsonl", b'{"prompt": "q"}\n'),
            images=[
                SimpleUploadedFile("ok.png", _png(), content_type="image/png"),
                SimpleUploadedFile("nul\x00.png", _png(), content_type="image/png"),
            ],
        )

    assert ImportJob.objects.count() == 0
    assert _media_files(tmp_path) == set()


def test_staging_that_fails_part_way_deletes_the_images_it_wrote(settings, tmp_path):
    from feedback.images import images_stage_uploads

    settings.MEDIA_ROOT = str(tmp_path)
    unreadable = SimpleUploadedFile("b.png", _png())
    unreadable.close()  # fails as storage reads it, after storage has created its file
    uploads = {"a.png": SimpleUploadedFile("a.png", _png()), "b.png": unreadable}

    with pytest.raises(ValueError, match="closed file"):
        images_stage_uploads(prefix="imports/1", uploads=uploads)

    assert _media_files(tmp_path) == set()


def test_file_names_longer_than_a_file_system_takes_are_imported(
    api_for, engineer, pairwise_campaign, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = str(tmp_path)
    image_name = "図" * 100 + ".png"  # 304 bytes in UTF-8; ext4 takes 255 in a name
    line = json.dumps(_item(external_id="cjk", context={"images": [f"upload:{image_name}"]}))
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile("項目" * 50 + ".jsonl", line.encode() + b"\n"),
                "images": [SimpleUploadedFile(image_name, _png(5, 5), content_type="image/png")],
            },
            format="multipart",
        )

    assert res.status_code == 202, res.content
    assert res.json()["filename"] == "項目" * 50 + ".jsonl"
    assert client.get(f"/api/v1/imports/{res.json()['id']}/").json()["status"] == "succeeded"
    assert Item.objects.get(external_id="cjk").context["images"][0]["width"] == 5


def test_response_image_ids_do_not_give_away_the_order_the_responses_came_in(
    api_for, engineer, pairwise_campaign
):
    # Experts see the ids of response images (in the item and in their addresses). Stored in
    # the source's order, the lower image id would always be the model listed first, whatever
    # the order of the response ids; the responses' images are stored in a random order too.
    batch = [
        {
            "external_id": f"o-{n}",
            "prompt": f"Question {n}?",
            "responses": [
                {
                    "model": "first",
                    "text": "F",
                    "images": [_data_url(_png(1, 1, f"#{n + 1:02x}0000"))],
                },
                {
                    "model": "second",
                    "text": "S",
                    "images": [_data_url(_png(1, 1, f"#00{n + 1:02x}00"))],
                },
            ],
        }
        for n in range(40)
    ]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", batch, format="json"
    )
    assert res.status_code == 201, res.json()

    first_has_lower_image_id = []
    for item in Item.objects.filter(campaign=pairwise_campaign):
        first, second = item.responses.order_by("position")
        assert (first.model_name, second.model_name) == ("first", "second")
        first_has_lower_image_id.append(first.images[0]["id"] < second.images[0]["id"])
    assert ItemImage.objects.count() == 80
    # Both orders occur (all 40 alike by chance: 2 in 2^40).
    assert set(first_has_lower_image_id) == {True, False}
