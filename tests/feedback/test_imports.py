"""File imports: formats, all-or-nothing, errors that name the line or row and the field."""

from __future__ import annotations

import base64
import io
import json
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback.models import ImportJob, Item, QueueEntry, Response
from tests.feedback.import_files import item_object, jsonl, parquet

pytestmark = pytest.mark.django_db


@pytest.fixture
def upload(api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks):
    """POST a file to the campaign's imports; returns (response, import status or None)."""
    client = api_for(engineer)

    def send(
        name: str,
        content: bytes,
        content_type: str = "application/octet-stream",
        campaign=None,
        **fields: Any,
    ):
        campaign = campaign or pairwise_campaign
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(
                f"/api/v1/campaigns/{campaign.pk}/imports/",
                {"file": SimpleUploadedFile(name, content, content_type=content_type), **fields},
                format="multipart",
            )
        if res.status_code != 202:
            return res, None
        return res, client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    return send


def test_it_imports_a_jsonl_file_in_the_background(upload, pairwise_campaign):
    res, status = upload("items.jsonl", jsonl(item_object(1), item_object(2), item_object(3)))

    assert res.status_code == 202
    assert res.json()["status"] == "queued"
    assert status["status"] == "succeeded", status
    assert (status["rows"], status["created"], status["duplicates"], status["invalid"]) == (
        3,
        3,
        0,
        0,
    )
    assert Item.objects.filter(campaign=pairwise_campaign).count() == 3
    item = Item.objects.get(external_id="q-2")
    assert item.queue.open_slots == pairwise_campaign.overlap
    assert list(item.responses.values_list("model_name", "text", "position")) == [
        ("m-a", "A2", 0),
        ("m-b", "B2", 1),
    ]


def test_response_ids_do_not_give_away_the_order_of_the_files_responses(upload, pairwise_campaign):
    # A Hugging Face file lists `chosen` first: stored in that order, the lower id would mark
    # it in a blind review. Each item's responses are stored in a random order instead.
    _res, status = upload("items.jsonl", jsonl(*(item_object(n) for n in range(40))))
    assert status["status"] == "succeeded", status

    first_has_lower_id = []
    for item in Item.objects.filter(campaign=pairwise_campaign):
        first, second = item.responses.order_by("position")
        n = item.external_id.removeprefix("q-")
        assert (first.model_name, first.text, second.text) == ("m-a", f"A{n}", f"B{n}")
        first_has_lower_id.append(first.pk < second.pk)
    # Both orders occur (all 40 alike by chance: 2 in 2^40).
    assert set(first_has_lower_id) == {True, False}


def test_malformed_json_on_line_3_names_the_line_and_imports_nothing(upload):
    _res, status = upload(
        "items.jsonl", jsonl(item_object(1), item_object(2), b'{"prompt": "x",', item_object(4))
    )

    assert status["status"] == "failed"
    assert status["invalid"] == 1
    assert status["created"] == 0
    [error] = status["errors"]
    assert error["line"] == 3
    assert error["field"] == ""
    # Where the line stops, not column 1 of the line after its line end.
    assert error["message"] == "is not valid JSON: unexpected end of data at column 16"
    assert "nothing was imported" in status["message"]
    assert Item.objects.count() == 0
    assert Response.objects.count() == 0


def test_a_byte_that_is_not_utf8_in_a_jsonl_line_is_named_at_its_column(upload):
    """orjson called it "str is not valid UTF-8: surrogates not allowed at column 1"; the byte
    (Latin-1 é) is the 16th of its line."""
    _res, status = upload("items.jsonl", jsonl(item_object(1), b'{"prompt": "caf\xe9"}'))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "line": 2,
            "field": "",
            "message": "is not UTF-8 text (invalid continuation byte) at column 16",
        }
    ]
    assert Item.objects.count() == 0


def test_a_missing_prompt_and_a_response_that_is_not_a_string_name_line_and_field(upload):
    missing_prompt = {"external_id": "x", "responses": []}
    bad_text = item_object(3, responses=[{"model": "m", "text": 42}, {"model": "n", "text": "ok"}])
    _res, status = upload("items.jsonl", jsonl(item_object(1), missing_prompt, bad_text))

    assert status["status"] == "failed"
    assert {(e["line"], e["field"]) for e in status["errors"]} == {
        (2, "prompt"),
        (3, "responses[0].text"),
    }
    assert next(e for e in status["errors"] if e["line"] == 3)["message"] == "must be a string"
    assert Item.objects.count() == 0


def test_an_empty_or_blank_response_text_names_the_line_and_field(upload):
    blank = item_object(2, responses=[{"model": "a", "text": "A"}, {"model": "b", "text": "\t\n"}])
    _res, status = upload("items.jsonl", jsonl(item_object(1), blank, item_object(3)))

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {"line": 2, "field": "responses[1].text", "message": "must not be empty"}
    ]
    assert Item.objects.count() == 0


def test_a_csv_with_a_bom_and_quoted_newlines_is_read_row_by_row(upload, pairwise_campaign):
    csv_text = (
        "\ufeffexternal_id,prompt,response_1,response_2,domain\r\n"
        'c-1,"First line\nsecond line","Answer, with comma","B1",contracts\r\n'
        'c-2,"Plain",A2,"B2 says ""hi""",tax\r\n'
    )
    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "succeeded", status
    assert status["created"] == 2
    first = Item.objects.get(external_id="c-1")
    assert first.prompt == "First line\nsecond line"
    assert first.metadata == {"domain": "contracts"}
    assert list(first.responses.values_list("text", flat=True)) == ["Answer, with comma", "B1"]
    second = Item.objects.get(external_id="c-2")
    assert second.responses.get(position=1).text == 'B2 says "hi"'


def test_a_csv_priority_written_as_a_float_by_pandas_is_that_integer(upload):
    """pandas writes an integer column with a missing value as floats: 3.0 is 3."""
    csv_text = (
        "external_id,prompt,priority,response_1,response_2\n"
        "c-1,Q,3.0,A,B\nc-2,R,,A,B\nc-3,S,+4,A,B\n"
    )
    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "succeeded", status
    assert dict(Item.objects.values_list("external_id", "priority")) == {
        "c-1": 3,
        "c-2": 0,
        "c-3": 4,
    }
    fraction = "external_id,prompt,priority,response_1,response_2\nc-3,Q,2.5,A,B\n"
    _res, status = upload("items.csv", fraction.encode(), "text/csv")
    assert status["status"] == "failed"
    assert status["errors"][0]["field"] == "priority"
    assert "got 2.5" in status["errors"][0]["message"]


def test_a_csv_error_names_the_row_its_first_line_and_the_column(upload):
    csv_text = (
        "external_id,prompt,priority,response_1,response_2\n"
        'c-1,"two\nlines",1,A,B\n'
        "c-2,Question,high,A,B\n"
    )
    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"row": 2, "line": 4, "field": "priority", "message": "'high' is not an integer"}
    ]
    assert Item.objects.count() == 0


def test_every_unreadable_cell_of_a_row_is_named_not_only_the_first(upload):
    csv_text = (
        "external_id,prompt,context,priority,response_1,response_2,metadata\n"
        'c-1,Question,"{""a"": 1",high,A,B,"[1,"\n'
        "c-2,Question,,1,A,B,\n"
    )
    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "failed", status
    assert [(e["row"], e["field"]) for e in status["errors"]] == [
        (1, "context"),
        (1, "priority"),
        (1, "metadata"),
    ]
    assert status["errors"][1]["message"] == "'high' is not an integer"
    assert status["invalid"] == 1
    assert Item.objects.count() == 0


def test_every_unreadable_cell_of_a_label_studio_task_is_named(upload):
    tasks = [
        {"id": 7, "data": {"prompt": "Q", "response_1": {"no": "text"}, "response_2": {"x": 1}}},
    ]
    _res, status = upload("export.json", json.dumps(tasks).encode(), format="label_studio")

    assert status["status"] == "failed", status
    assert [(e["task"], e["task_id"], e["field"]) for e in status["errors"]] == [
        (1, "7", "response_1"),  # tasks count from 1, as rows do
        (1, "7", "response_2"),
    ]
    assert status["errors"][0]["message"].startswith('is an object without "text" (its keys: no)')


@pytest.mark.parametrize(
    ("row_2", "where", "message"),
    [
        # Skipping would drop every row after the unreadable one and still call the import a
        # success: the file fails, naming where reading stopped.
        (b"c-2,Second \xff,A,B", {"column": 12}, "is not UTF-8 text (invalid start byte)"),
        (b'c-2,"Second,A,B', {}, "a quoted cell that starts here is never closed"),
    ],
)
def test_a_csv_that_cannot_be_read_on_fails_even_when_asked_to_skip_invalid_rows(
    upload, row_2, where, message
):
    csv_bytes = b"external_id,prompt,response_1,response_2\nc-1,First,A,B\n%b\nc-3,Third,A,B\n"
    _res, status = upload("items.csv", csv_bytes % row_2, "text/csv", on_error="skip")

    assert status["status"] == "failed", status
    assert status["errors"] == [{"row": 2, "line": 3, **where, "field": "", "message": message}]
    assert status["message"].startswith("The file cannot be read at row 2, line 3")
    assert Item.objects.count() == 0


def test_an_external_id_repeated_with_other_content_names_the_line_and_imports_nothing(upload):
    rows = [item_object(1), item_object(2), item_object(1, prompt="Same id, other text")]
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "line": 3,
            "field": "external_id",
            "message": "'q-1' appears earlier in this file with other content",
        }
    ]
    assert Item.objects.count() == 0


@pytest.mark.parametrize("chunk_items", [1, 1000])
def test_an_invalid_row_does_not_hide_the_id_conflicts_after_it(upload, monkeypatch, chunk_items):
    """All or nothing: rows after the first invalid one were no longer checked against each
    other, so a conflict was named only once that row was mended and the file sent again."""
    monkeypatch.setattr("feedback.imports.CHUNK_ITEMS", chunk_items)
    no_prompt = {k: v for k, v in item_object(4).items() if k != "prompt"}
    rows = [
        {"prompt": ""},
        item_object(2),
        item_object(2, prompt="Same id, other text"),
        no_prompt,
    ]

    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed"
    assert [(e["line"], e["field"]) for e in status["errors"]] == [
        (1, "prompt"),
        (3, "external_id"),
        (4, "prompt"),
    ]
    assert status["invalid"] == 3
    assert status["created"] == 0
    assert status["message"].startswith("3 invalid rows; nothing was imported.")
    assert Item.objects.count() == 0
    assert QueueEntry.objects.count() == 0
    assert Response.objects.count() == 0


def test_an_external_id_repeated_with_other_content_after_a_duplicate_row_is_an_error(upload):
    # Row 1 is skipped as a copy of a stored item's content, so it is not stored under its
    # id; row 2 has that id and other content, which of the two is meant cannot be guessed.
    _res, status = upload("items.jsonl", jsonl(item_object(1)))
    assert status["created"] == 1
    copy = item_object(1, external_id="x")
    other = item_object(1, external_id="x", prompt="Other text")

    _res, status = upload("items.jsonl", jsonl(copy, other))

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "line": 2,
            "field": "external_id",
            "message": "'x' appears earlier in this file with other content",
        }
    ]
    assert Item.objects.count() == 1


def test_an_external_id_already_stored_then_repeated_with_other_content_is_an_error(upload):
    # As in a batch: two different items under one id in one file, whatever the campaign held.
    _res, status = upload("items.jsonl", jsonl(item_object(1)))
    assert status["created"] == 1

    _res, status = upload(
        "items.jsonl", jsonl(item_object(1, prompt="Edited"), item_object(1, prompt="Again"))
    )

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "line": 2,
            "field": "external_id",
            "message": "'q-1' appears earlier in this file with other content",
        }
    ]
    assert Item.objects.count() == 1


def test_repeated_items_and_items_already_stored_are_reported_and_skipped(upload):
    _res, status = upload("items.jsonl", jsonl(item_object(1), item_object(2), item_object(1)))

    assert status["status"] == "succeeded"
    assert (status["created"], status["duplicates"]) == (2, 1)
    assert status["duplicate_rows"] == [
        {
            "line": 3,
            "external_id": "q-1",
            "reason": "external_id 'q-1' appears earlier in this file",
        }
    ]
    assert Item.objects.count() == 2

    _again, status = upload("items.jsonl", jsonl(item_object(2, prompt="edited"), item_object(5)))
    assert (status["created"], status["duplicates"]) == (1, 1)
    assert status["duplicate_rows"][0]["reason"] == "external_id 'q-2' is already in the campaign"
    assert Item.objects.count() == 3


def test_a_file_over_the_limit_is_refused_before_anything_is_stored(upload, settings):
    settings.IMPORT_MAX_BYTES = 200
    res, _ = upload("items.jsonl", jsonl(item_object(1), item_object(2), item_object(3)))

    assert res.status_code == 413
    error = res.json()["error"]
    assert error["code"] == "file_too_large"
    assert "file" in error["fields"]
    assert ImportJob.objects.count() == 0
    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("items.csv", "text/x-csv"),
        ("items.csv", "application/x-csv"),
        ("items.csv", "text/comma-separated-values"),
        ("items.jsonl", "application/x-jsonl"),
        ("items.jsonl", "application/x-ndjson"),
    ],
)
def test_the_content_types_clients_send_for_csv_and_jsonl_are_taken(upload, name, content_type):
    content = (
        b"external_id,prompt,response_1,response_2\nc-1,First,A,B\n"
        if name.endswith(".csv")
        else jsonl(item_object(1))
    )
    res, status = upload(name, content, content_type)

    assert res.status_code == 202, res.json()
    assert status["status"] == "succeeded", status
    assert Item.objects.count() == 1


@pytest.mark.parametrize(
    ("encoding", "said"),
    [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32"), ("utf-32-be", "UTF-32")],
)
def test_a_utf16_or_utf32_file_is_refused_saying_what_it_is(upload, encoding, said):
    text = "external_id,prompt,response_1,response_2\nc-1,First,A,B\n"
    # Python's utf-16 and utf-32 write the mark; the -be ones do not, so it is added.
    data = text.encode(encoding) if "-" not in encoding else ("\ufeff" + text).encode(encoding)

    res, _ = upload("items.csv", data, "text/csv")

    assert res.status_code == 415
    assert res.json()["error"]["fields"] == {"file": [f"is {said}, not UTF-8"]}
    assert "Save it as UTF-8" in res.json()["error"]["message"]
    assert ImportJob.objects.count() == 0


def test_a_json_file_of_json_lines_is_refused_as_a_label_studio_export_at_once(upload, tmp_path):
    """Dataset.to_json writes JSON Lines under a .json name, which says Label Studio."""
    import datasets

    path = tmp_path / "train.json"
    responses = [[{"model": "a", "text": f"A{n}"}, {"model": "b", "text": f"B{n}"}] for n in (1, 2)]
    datasets.Dataset.from_dict({"prompt": ["Q1?", "Q2?"], "responses": responses}).to_json(
        str(path)
    )
    content = path.read_bytes()

    for sent in (content, b"\xef\xbb\xbf \n" + content):
        res, _ = upload("train.json", sent, "application/json")

        assert res.status_code == 415, res.json()
        error = res.json()["error"]
        assert error["fields"] == {"file": ["starts with {, not [: not a Label Studio export"]}
        assert "It looks like JSON Lines" in error["message"]
        assert "send it with format=jsonl" in error["message"]
        assert "Dataset.to_parquet" in error["message"]
    assert ImportJob.objects.count() == 0

    _res, status = upload("train.json", content, "application/json", format="jsonl")

    assert (status["status"], status["created"]) == ("succeeded", 2), status


def test_items_stored_without_responses_are_told_in_the_message(upload, pairwise_campaign):
    # Columns that are not among the names recognised as responses go to metadata: the items
    # wait for generation, and the message says so and what to do if that was not meant.
    csv_bytes = b"id,prompt,model_a_output,model_b_output\n1,hello,A says,B says\n2,hi,C,D\n"
    _res, status = upload("items.csv", csv_bytes, "text/csv")

    assert status["status"] == "succeeded", status
    assert status["message"] == (
        "Imported 2 items. 2 have no responses and wait for generation"
        f" (POST campaigns/{pairwise_campaign.pk}/generate/); if the file holds responses,"
        " name their columns in `mapping.responses`."
    )
    assert Item.objects.get(prompt="hello").metadata["model_a_output"] == "A says"

    _res, status = upload("items.csv", b"prompt,response_a,response_b\nq2,A,B\nq3,,\n", "text/csv")
    assert status["message"].startswith("Imported 2 items. 1 has no responses and waits")


def test_the_message_writes_its_counts_alike(upload):
    """It said "Imported 1200 items. 1,200 have no responses …"."""
    rows = [{"prompt": f"Q{n}?", "external_id": f"w-{n}"} for n in range(1200)]

    _res, status = upload("items.jsonl", jsonl(*rows, rows[0]))

    assert status["message"].startswith(
        "Imported 1,200 items, skipped 1 duplicate. 1,200 have no responses and wait"
    )


def test_a_misspelt_part_is_refused_not_ignored(upload, api_for, engineer, pairwise_campaign):
    # `maping` ignored would import the file with its columns guessed instead of as mapped.
    res, _ = upload("items.jsonl", jsonl(item_object(1)), maping='{"prompt": "question"}')

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"maping": ["is not a part of an import"]}
    assert ImportJob.objects.count() == 0

    batch = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {"items": json.dumps([item_object(1)]), "image": SimpleUploadedFile("a.png", b"x")},
        format="multipart",
    )
    assert batch.status_code == 400
    assert batch.json()["error"]["fields"] == {"image": ["is not a part of a batch"]}
    assert Item.objects.count() == 0


def test_two_files_or_two_mappings_in_one_import_are_refused(api_for, engineer, pairwise_campaign):
    """Two `file` parts (a dataset's two shards) were taken as the last alone, the first
    dropped without a word, and the import said it succeeded."""
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/"

    def shard(n: int) -> SimpleUploadedFile:
        return SimpleUploadedFile(f"train-0000{n}-of-00002.jsonl", jsonl(item_object(n)))

    two_files = client.post(url, {"file": [shard(0), shard(1)]}, format="multipart")
    two_mappings = client.post(
        url,
        {
            "file": SimpleUploadedFile("items.csv", b"q,a,b\nQ?,A,B\n"),
            "mapping": ['{"prompt": "q"}', '{"prompt": "a"}'],
        },
        format="multipart",
    )

    assert two_files.status_code == 400
    assert two_files.json()["error"]["fields"] == {
        "file": ["is sent more than once; an import takes one"]
    }
    assert "one file per import" in two_files.json()["error"]["message"]
    assert two_mappings.status_code == 400
    assert two_mappings.json()["error"]["fields"] == {
        "mapping": ["is sent more than once; an import takes one"]
    }
    assert ImportJob.objects.count() == 0
    assert Item.objects.count() == 0


@pytest.mark.parametrize("name", ["items.csv", "items.jsonl"])
def test_a_file_whose_lines_end_with_cr_alone_is_refused_saying_so(upload, name):
    rows = (
        [b"external_id,prompt,response_1,response_2", b"c-1,First,A,B"]
        if name.endswith(".csv")
        else [jsonl(item_object(1)).strip(), jsonl(item_object(2)).strip()]
    )
    res, _ = upload(name, b"\r".join(rows) + b"\r", "text/plain")

    assert res.status_code == 415
    assert res.json()["error"]["fields"] == {"file": ["lines end with CR alone"]}
    assert ImportJob.objects.count() == 0

    crlf, _status = upload(name, b"\r\n".join(rows) + b"\r\n", "text/plain")
    assert crlf.status_code == 202


@pytest.mark.parametrize("name", ["items", "items.txt"])
def test_a_file_of_no_known_type_is_told_the_formats_to_name(upload, name):
    res, _ = upload(name, jsonl(item_object(1)), "application/octet-stream")

    assert res.status_code == 415
    assert res.json()["error"]["message"] == (
        f"Cannot tell the format of {name!r}: name it .jsonl, .csv, .parquet or .json (a Label"
        " Studio export), or send format= one of jsonl, csv, parquet, label_studio."
    )
    assert res.json()["error"]["fields"] == {"file": ["unknown file type"]}
    assert ImportJob.objects.count() == 0


def test_a_wrong_content_type_is_refused(upload, api_for, engineer, pairwise_campaign):
    png_bytes = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    res, _ = upload("items.jsonl", png_bytes, "image/png")
    assert res.status_code == 415
    assert res.json()["error"]["code"] == "unsupported_media_type"
    assert "content type image/png" in res.json()["error"]["fields"]["file"][0]

    res, _ = upload("items.jsonl", png_bytes, "application/octet-stream")
    assert res.status_code == 415
    assert "binary" in res.json()["error"]["message"]

    res, _ = upload("items.parquet", jsonl(item_object(1)), "application/octet-stream")
    assert res.status_code == 415
    assert "not Parquet" in res.json()["error"]["message"]

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/", [item_object(1)], format="json"
    )
    assert res.status_code == 415
    assert "multipart/form-data" in res.json()["error"]["message"]
    assert ImportJob.objects.count() == 0
    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "kind", "fields"),
    [
        ("items.jsonl.gz", "gzip", {}),
        ("items.jsonl", "gzip", {}),
        ("items.jsonl", "gzip", {"content_type": "application/gzip"}),
        ("items.gz", "gzip", {"format": "jsonl"}),
        ("items.csv", "bzip2", {}),
        ("items.jsonl.zst", "zstd", {}),
        ("export.zip", "zip", {"format": "csv"}),
        ("train.parquet", "gzip", {}),
    ],
)
def test_a_compressed_file_is_refused_saying_it_is_compressed(upload, name, kind, fields):
    """Imports read files as they are: a compressed one (a dataset's usual .jsonl.gz) is
    refused at once, saying so and what to do, whatever its name or the format sent."""
    import bz2
    import gzip
    import zipfile

    raw = jsonl(item_object(1), item_object(2))
    if kind == "gzip":
        content = gzip.compress(raw)
    elif kind == "bzip2":
        content = bz2.compress(raw)
    elif kind == "zstd":
        content = b"\x28\xb5\x2f\xfd" + b"\x00" * 32  # a zstd frame's magic number
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("items.csv", raw)
        content = buffer.getvalue()
    res, _ = upload(name, content, **fields)

    assert res.status_code == 415, res.json()
    error = res.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["message"].startswith(f"The file is {kind}-compressed;"), error["message"]
    assert "uncompressed" in error["message"]
    # A command to run, where it would work.
    assert ("`gunzip items.jsonl.gz`" in error["message"]) == (name == "items.jsonl.gz")
    assert error["fields"] == {"file": [f"{kind}-compressed; send it uncompressed"]}
    assert ImportJob.objects.count() == 0
    assert Item.objects.count() == 0


def test_an_empty_file_is_refused_at_once(upload):
    """A 0-byte upload (an export that wrote nothing, the wrong file picked) is not an import
    that 'succeeded' with nothing in it."""
    res, _ = upload("items.jsonl", b"")

    assert res.status_code == 400, res.json()
    error = res.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {"file": ["is empty (0 bytes)"]}
    assert ImportJob.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("items.jsonl", b"\n\n  \n"),
        ("items.csv", b"external_id,prompt,chosen,rejected\r\n"),
        ("items.csv", b"\n\r\n  \n"),
        ("export.json", b"[]"),
    ],
)
def test_a_file_without_a_single_row_fails_saying_so(upload, name, content):
    _res, status = upload(name, content)

    assert status["status"] == "failed"
    assert (status["rows"], status["created"]) == (0, 0)
    assert status["message"].startswith("The file holds no rows"), status["message"]
    assert status["errors"] == [{"field": "", "message": "no rows"}]
    assert Item.objects.count() == 0


def test_on_error_skip_imports_the_valid_rows_and_lists_the_rest(upload):
    _res, status = upload(
        "items.jsonl", jsonl(item_object(1), b"not json", item_object(3)), on_error="skip"
    )

    assert status["status"] == "succeeded"
    assert (status["created"], status["invalid"]) == (2, 1)
    assert status["errors"][0]["line"] == 2
    assert Item.objects.count() == 2


def test_a_hugging_face_preference_dataset_saved_as_parquet(upload, pairwise_campaign):
    table = pa.table(
        {
            "prompt": ["What is 2+2?", "Name a prime."],
            "chosen": [
                [
                    {"role": "user", "content": "What is 2+2?"},
                    {"role": "assistant", "content": "4"},
                ],
                [
                    {"role": "user", "content": "Name a prime."},
                    {"role": "assistant", "content": "7"},
                ],
            ],
            "rejected": [
                [
                    {"role": "user", "content": "What is 2+2?"},
                    {"role": "assistant", "content": "5"},
                ],
                [
                    {"role": "user", "content": "Name a prime."},
                    {"role": "assistant", "content": "9"},
                ],
            ],
            "source": ["math", "math"],
        }
    )
    _res, status = upload("train-00000-of-00001.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    item = Item.objects.get(prompt="What is 2+2?")
    assert list(item.responses.values_list("model_name", "text")) == [
        ("chosen", "4"),
        ("rejected", "5"),
    ]
    assert item.metadata == {"source": "math"}


def _preference_table(rows: int) -> pa.Table:
    return pa.table(
        {
            "prompt": [f"Question {n}? " + "x" * 200 for n in range(rows)],
            "chosen": [f"A{n} " * 50 for n in range(rows)],
            "rejected": [f"B{n} " * 50 for n in range(rows)],
        }
    )


def test_a_parquet_file_cut_short_is_refused_at_once(upload):
    """A download that stopped keeps the leading PAR1 but not the footer: the worker could not
    read a row of it, and failed with pyarrow's words and no place."""
    whole = parquet(_preference_table(40))

    res, _ = upload("train-00000-of-00002.parquet", whole[: len(whole) // 2])

    assert res.status_code == 415, res.json()
    assert res.json()["error"]["fields"] == {
        "file": ["not a whole Parquet file (no PAR1 at its end)"]
    }
    assert ImportJob.objects.count() == 0


def test_a_damaged_page_of_a_parquet_file_names_the_row_and_imports_nothing(upload):
    """A page whose compressed data is damaged: the rows of its row group from there on cannot
    be read, so the import fails, whatever on_error says, naming the first of them."""
    buffer = io.BytesIO()
    pq.write_table(_preference_table(40), buffer, row_group_size=20, compression="snappy")
    data = bytearray(buffer.getvalue())
    column = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    # Past the page header, before the next column's: the compressed values themselves.
    data[start + 30 : start + column.total_compressed_size - 8] = b"\xab" * (
        column.total_compressed_size - 38
    )

    _res, status = upload("data.parquet", bytes(data), on_error="skip")

    assert status["status"] == "failed", status
    [error] = status["errors"]
    assert (error["row"], error["row_group"], error["field"]) == (21, 1, "")
    assert error["message"] == "is damaged there (Corrupt snappy compressed data.)"
    assert status["message"].startswith("The file cannot be read at row 21, row_group 1:")
    assert Item.objects.count() == 0


def test_a_parquet_file_with_an_explicit_mapping(upload):
    table = pa.table(
        {
            "id": ["p-1"],
            "question": ["Which is safer?"],
            "answer_x": ["Option X"],
            "answer_y": ["Option Y"],
            "model_x": ["gpt-x"],
        }
    )
    mapping = {
        "external_id": "id",
        "prompt": "question",
        "responses": [
            {"column": "answer_x", "model_column": "model_x"},
            {"column": "answer_y", "model": "baseline"},
        ],
        "metadata": [],
    }
    _res, status = upload("data.parquet", parquet(table), mapping=json.dumps(mapping))

    assert status["status"] == "succeeded", status
    item = Item.objects.get(external_id="p-1")
    assert list(item.responses.values_list("model_name", "text")) == [
        ("gpt-x", "Option X"),
        ("baseline", "Option Y"),
    ]


@pytest.mark.parametrize(
    ("mapping", "kept"),
    [
        # Only the metadata was to be left out: the prompt column was then reported missing.
        ({"metadata": []}, "nothing"),
        ({"external_id": "src"}, "external_id"),
        # The responses named and not the prompt: the prompt column is found by its name.
        ({"responses": ["chosen", "rejected"]}, "metadata"),
    ],
)
def test_what_a_mapping_leaves_out_is_found_by_name_as_without_one(
    upload, pairwise_campaign, mapping, kept
):
    table = pa.table({"prompt": ["Which?"], "chosen": ["Good"], "rejected": ["Bad"], "src": ["hh"]})

    _res, status = upload("data.parquet", parquet(table), mapping=json.dumps(mapping))
    _res, csv_status = upload(
        "data.csv",
        b"prompt,chosen,rejected,src\nOther?,Good,Bad,oa\n",
        "text/csv",
        mapping=json.dumps(mapping),
    )

    assert status["status"] == csv_status["status"] == "succeeded", (status, csv_status)
    for prompt, src in (("Which?", "hh"), ("Other?", "oa")):
        item = Item.objects.get(campaign=pairwise_campaign, prompt=prompt)
        assert list(item.responses.order_by("position").values_list("model_name", "text")) == [
            ("chosen", "Good"),
            ("rejected", "Bad"),
        ]
        assert item.metadata == ({"src": src} if kept == "metadata" else {})
        assert item.external_id == (src if kept == "external_id" else None)


def test_a_mapping_that_names_the_content_leaves_other_columns_to_metadata(
    upload, pairwise_campaign
):
    """Columns named like item fields (`context`, `priority`) or responses (`output`) are the
    user's metadata once the mapping says where the prompt and responses are: read as the
    item's, a text `context` failed every row, and an `output` made a pair of three."""
    csv_bytes = (
        b"question,answer_a,answer_b,context,priority,output\n"
        b"Which?,A,B,From the SQuAD passage,high,unused\n"
    )
    mapping = {"prompt": "question", "responses": ["answer_a", "answer_b"]}

    _res, status = upload("data.csv", csv_bytes, "text/csv", mapping=json.dumps(mapping))
    _res, waiting = upload(
        "later.csv",
        b"instruction,output\nSay hi,hi\n",
        "text/csv",
        mapping=json.dumps({"prompt": "instruction"}),
    )

    assert status["status"] == "succeeded", status
    item = Item.objects.get(campaign=pairwise_campaign, prompt="Which?")
    assert item.metadata == {
        "context": "From the SQuAD passage",
        "priority": "high",
        "output": "unused",
    }
    assert (item.context, item.priority, item.responses.count()) == ({}, 0, 2)
    assert waiting["status"] == "succeeded", waiting
    assert Item.objects.get(campaign=pairwise_campaign, prompt="Say hi").metadata == {
        "output": "hi"
    }


def test_a_mapping_naming_the_chat_column_leaves_the_prompt_to_it(upload, pairwise_campaign):
    chat = [{"role": "user", "content": "Hi?"}]
    table = pa.table(
        {"question": ["Not this"], "dialog": [chat], "chosen": ["A"], "rejected": ["B"]}
    )

    _res, status = upload(
        "data.parquet", parquet(table), mapping=json.dumps({"messages": "dialog"})
    )

    assert status["status"] == "succeeded", status
    item = Item.objects.get(campaign=pairwise_campaign)
    assert item.prompt == chat
    # A mapping that names content is taken as it is: what it leaves out is metadata.
    assert item.metadata == {"question": "Not this", "chosen": "A", "rejected": "B"}
    assert item.responses.count() == 0


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"column": "a", "model": 5}, "mapping.responses[0].model", "must be a non-empty string"),
        ({"column": "a", "model": " "}, "mapping.responses[0].model", "must be a non-empty string"),
        (
            {"column": "a", "format": "html"},
            "mapping.responses[0].format",
            "must be one of code, diff, markdown, text, got 'html'",
        ),
        (
            {"column": "a", "model_column": 3},
            "mapping.responses[0].model_column",
            "must be a column name",
        ),
    ],
)
def test_a_response_spec_of_a_mapping_is_checked_at_upload(upload, spec, field, message):
    """Each such spec was taken, and then failed every row of the file in the worker."""
    mapping = {"prompt": "q", "responses": [spec, "b"]}

    res, _ = upload("data.csv", b"q,a,b\nQ?,A,B\n", "text/csv", mapping=json.dumps(mapping))

    assert res.status_code == 400, res.json()
    assert res.json()["error"]["fields"] == {field: [message]}
    assert ImportJob.objects.count() == 0


def test_a_mapping_that_names_a_missing_column_fails_clearly(upload):
    table = pa.table({"question": ["Q?"], "a": ["1"], "b": ["2"]})
    _res, status = upload(
        "data.parquet", parquet(table), mapping=json.dumps({"prompt": "instruction"})
    )

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"field": "mapping.prompt", "message": "column 'instruction' is not in the file"}
    ]


def test_a_label_studio_json_export(upload, pairwise_campaign):
    export = [
        {
            "id": 101,
            "data": {"prompt": "Summarise the clause.", "answer1": "Short.", "answer2": "Long."},
            "annotations": [{"result": []}],
            "predictions": [],
        },
        {
            "id": 102,
            "data": {"prompt": "Is it void?", "answer1": "Yes.", "answer2": "No.", "lang": "en"},
            "annotations": [],
        },
    ]
    _res, status = upload("project-7-export.json", json.dumps(export).encode(), "application/json")

    assert status["status"] == "succeeded", status
    item = Item.objects.get(external_id="ls-102")
    assert item.prompt == "Is it void?"
    assert list(item.responses.values_list("model_name", "text")) == [
        ("answer1", "Yes."),
        ("answer2", "No."),
    ]
    assert item.metadata["lang"] == "en"
    assert item.metadata["label_studio"] == {"task_id": 102, "annotations": 0, "predictions": 0}


def test_blank_lines_before_a_csv_header_are_passed_over(upload):
    content = b"\r\n  \nprompt,chosen,rejected\r\nIs it void?,Yes.,No.\r\n\r\nAnd now?,A,B\r\n"

    _res, status = upload("items.csv", content)

    assert status["status"] == "succeeded", status
    assert sorted(Item.objects.values_list("prompt", flat=True)) == ["And now?", "Is it void?"]


def _task(task_id: Any, prompt: str, **data: Any) -> dict[str, Any]:
    return {"id": task_id, "data": {"prompt": prompt, "chosen": "a", "rejected": "b", **data}}


def test_a_label_studio_task_id_is_read_as_label_studio_gives_it(upload):
    tasks = [_task(None, "q1"), _task(None, "q2"), _task(7.0, "q3"), _task("t-9", "q4")]

    _res, status = upload("export.json", json.dumps(tasks).encode())

    assert status["status"] == "succeeded", status
    stored = {
        i.prompt: (i.external_id, i.metadata["label_studio"]["task_id"]) for i in Item.objects.all()
    }
    # A null id is none: no external_id, as for a task without the key.
    assert stored == {
        "q1": (None, None),
        "q2": (None, None),
        "q3": ("ls-7", 7),
        "q4": ("ls-t-9", "t-9"),
    }


def test_a_label_studio_task_id_label_studio_would_not_give_is_an_error_of_its_task(upload):
    tasks = [
        _task(1, "q1"),
        _task(True, "q2"),
        _task(2.5, "q3"),
        _task({"a": 1}, "q4"),
        _task(" ", "q5"),
    ]

    _res, status = upload("export.json", json.dumps(tasks).encode())

    assert status["status"] == "failed"
    assert [(e["task"], e["field"], e["message"]) for e in status["errors"]] == [
        (2, "id", "must be an integer, as Label Studio exports it, got true"),
        (3, "id", "must be an integer, as Label Studio exports it, got 2.5"),
        (4, "id", "must be an integer, as Label Studio exports it, got an object"),
        (5, "id", "must be an integer, as Label Studio exports it, got ' '"),
    ]
    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    "data",
    [{"label_studio": "v2"}, {"metadata": {"label_studio": {"project": 7}}}],
    ids=["data key", "metadata key"],
)
def test_a_label_studio_task_key_named_label_studio_is_an_error_not_lost(upload, data):
    _res, status = upload("export.json", json.dumps([_task(1, "q1", **data)]).encode())

    assert status["status"] == "failed"
    assert [(e["task"], e["task_id"], e["field"]) for e in status["errors"]] == [
        (1, "1", "label_studio")
    ]
    assert "rename the task's data key" in status["errors"][0]["message"]
    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    "mapping", [{"external_id": "ref"}, {"metadata": ["lang"]}], ids=["external_id", "metadata"]
)
def test_a_label_studio_mapping_naming_no_content_is_completed_from_the_first_task(upload, mapping):
    """As a CSV's or Parquet's: the prompt and responses are still found by name, and what the
    mapping names is used, and required of every task. Taken as given, every task was refused
    for want of a prompt."""
    export = [
        {
            "id": 1,
            "data": {"prompt": "Q1", "answer1": "A", "answer2": "B", "ref": "r-1", "lang": "en"},
        },
        {
            "id": 2,
            "data": {"prompt": "Q2", "answer1": "C", "answer2": "D", "ref": "r-2", "lang": "fr"},
        },
        {"id": 3, "data": {"prompt": "Q3", "answer1": "E", "answer2": "F"}},
    ]
    _res, status = upload(
        "export.json",
        json.dumps(export).encode(),
        "application/json",
        mapping=json.dumps(mapping),
        on_error="skip",
    )

    assert status["status"] == "succeeded", status
    item = Item.objects.get(prompt="Q2")
    assert list(item.responses.values_list("text", flat=True)) == ["C", "D"]
    if "external_id" in mapping:
        assert item.external_id == "r-2"
        assert "ref" not in item.metadata
    else:
        assert item.external_id == "ls-2"
        assert item.metadata["lang"] == "fr"
        assert "ref" not in item.metadata, "metadata keeps the keys it names"
    # The task without the key the mapping names is an error of that task, as in a CSV.
    [error] = status["errors"]
    assert (error["task"], error["field"]) == (3, f"mapping.{next(iter(mapping))}")
    assert not Item.objects.filter(prompt="Q3").exists()


def _ls_pair(task_id: int, **data: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "data": {"prompt": f"Q{task_id}", "answer1": "A", "answer2": "B", **data},
    }


def test_a_label_studio_task_without_a_response_key_the_first_task_has_is_an_error(upload):
    """Without a mapping the first task's keys are the columns of every task: a task lacking
    one is an error naming the key, never an item stored without its responses."""
    lacking = _ls_pair(202)
    del lacking["data"]["answer2"]
    export = json.dumps([_ls_pair(201), lacking, _ls_pair(203)]).encode()

    _res, status = upload("export.json", export, "application/json")

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "task": 2,
            "task_id": "202",
            "field": "answer2",
            "message": "is not in this task's data; the first task's data has it, and without a"
            " mapping that names the content its keys are read from every task (this task's"
            " keys are prompt, answer1)",
        }
    ]
    assert Item.objects.count() == 0

    _res, status = upload("export.json", export, "application/json", on_error="skip")

    assert (status["status"], status["created"], status["invalid"]) == ("succeeded", 2, 1)
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["ls-201", "ls-203"]
    assert Response.objects.count() == 4


def test_label_studio_tasks_with_responses_the_first_task_lacks_are_errors(upload):
    """The first task decides the columns: when it has no response keys, a later task that
    has some would lose them to its metadata."""
    first = _ls_pair(301)
    del first["data"]["answer2"]
    export = json.dumps([first, _ls_pair(302)]).encode()

    _res, status = upload("export.json", export, "application/json")

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "task": 2,
            "task_id": "302",
            "field": "answer1",
            "message": "holds a response (answer1, answer2), but the first task's data has no"
            " response keys, and without a mapping that names the content its keys are read"
            " from every task: name them in mapping.responses",
        }
    ]
    assert Item.objects.count() == 0


def test_a_label_studio_export_whose_first_task_has_no_prompt_fails_naming_it(upload):
    export = [{"id": 1, "data": {"q": "Q", "answer1": "A", "answer2": "B"}}, _ls_pair(2)]

    _res, status = upload(
        "export.json", json.dumps(export).encode(), "application/json", on_error="skip"
    )

    assert status["status"] == "failed", status
    message = (
        "the first task's data has no prompt key, and without a mapping that names the"
        " content its keys are read from every task: name one (its keys are q, answer1,"
        " answer2)"
    )
    assert status["errors"] == [
        {"task": 1, "task_id": "1", "field": "mapping.prompt", "message": message}
    ]
    assert status["message"] == (
        f"mapping.prompt (at task 1, task_id 1): {message}; nothing was imported."
    )
    assert Item.objects.count() == 0


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("annotations", 3, "3"),
        ("annotations", {"result": []}, "an object"),
        ("predictions", "none", '"none"'),
    ],
)
def test_annotations_or_predictions_that_are_not_a_list_are_an_error_of_the_task(
    upload, key, value, shown
):
    export = [{**_ls_pair(1), "annotations": None}, {**_ls_pair(2), key: value}, _ls_pair(3)]

    _res, status = upload("export.json", json.dumps(export).encode(), "application/json")

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "task": 2,
            "task_id": "2",
            "field": key,
            "message": f"must be a list, as Label Studio exports it, got {shown}",
        }
    ]
    assert Item.objects.count() == 0

    _res, status = upload(
        "export.json", json.dumps(export).encode(), "application/json", on_error="skip"
    )

    assert (status["status"], status["created"], status["invalid"]) == ("succeeded", 2, 1)
    assert Item.objects.get(external_id="ls-1").metadata["label_studio"] == {
        "task_id": 1,
        "annotations": 0,
        "predictions": 0,
    }


def test_a_lone_surrogate_in_a_label_studio_task_is_an_error_of_its_task_and_field(upload):
    """Python's JSON parser, which reads Label Studio exports, lets an unpaired \\ud800
    escape through: the task's row is invalid, naming the field, and the others import when
    skipping."""
    export = (
        b'[{"id": 1, "data": {"prompt": "fine", "answer1": "x", "answer2": "y"}},'
        b' {"id": 2, "data": {"prompt": "lone \\ud800 half", "answer1": "x", "answer2": "y"}},'
        b' {"id": 3, "data": {"prompt": "ok", "answer1": "x", "answer2": "y", "note": "\\udfff"}}]'
    )
    message = (
        "contains a lone UTF-16 surrogate (an unpaired \\ud800 escape), which is not a"
        " character and cannot be stored"
    )
    _res, status = upload("export.json", export, "application/json")
    assert status["status"] == "failed", status
    assert status["errors"] == [
        {"task": 2, "task_id": "2", "field": "prompt", "message": message},
        {"task": 3, "task_id": "3", "field": "metadata", "message": message},
    ]
    assert Item.objects.count() == 0

    _res, status = upload("export.json", export, "application/json", on_error="skip")
    assert (status["status"], status["created"], status["invalid"]) == ("succeeded", 1, 2)
    assert Item.objects.get().prompt == "fine"


def test_a_lone_surrogate_in_a_jsonl_line_is_an_error_of_its_field(upload):
    """orjson refuses the whole line ("no low surrogate in string at column 14"); it is valid
    JSON, so the line is read and the field holding the escape is named, as in a batch."""
    message = (
        "contains a lone UTF-16 surrogate (an unpaired \\ud800 escape), which is not a"
        " character and cannot be stored"
    )
    _res, status = upload(
        "items.jsonl",
        jsonl(item_object(1), b'{"prompt": "lone \\ud800 half"}', item_object(3)),
    )
    assert status["status"] == "failed", status
    assert status["errors"] == [{"line": 2, "field": "prompt", "message": message}]
    assert Item.objects.count() == 0


def test_errors_that_quote_a_nul_or_a_lone_surrogate_are_stored_with_u_fffd(upload):
    """A task id, an unknown key or a column name can hold what the job's JSON record cannot
    store: the errors keep them as U+FFFD, and the import ends failed as it should."""
    export = (
        b'[{"id": "t\\ud800", "data": {"prompt": "p", "answer1": "x", "answer2": "y", "n\\ud800": 1}},'
        b' {"id": "u\\u0000", "data": {"prompt": "p", "answer1": "x"}},'
        b' {"id": 3, "data": {"q\\ud800": "p", "answer1": "x", "answer2": "y"}}]'
    )
    _res, status = upload("export.json", export, "application/json")
    assert status["status"] == "failed", status
    assert sorted({(e["task"], e["task_id"]) for e in status["errors"]}) == [
        (1, "t\ufffd"),
        (2, "u\ufffd"),
        (3, "3"),
    ]
    assert "q\ufffd" in status["errors"][-1]["message"]

    _res, status = upload("items.jsonl", jsonl(item_object(1, **{"x\u0000": 1})))
    assert status["status"] == "failed", status
    assert status["errors"] == [
        {"line": 1, "field": "x\ufffd", "message": "is not a field of an item"}
    ]


def test_a_broken_label_studio_export_names_the_task(upload):
    _res, status = upload(
        "export.json",
        b'[{"id": 1, "data": {"prompt": "a", "answer1": "x", "answer2": "y"}}, {"id": 2, "data": ',
        "application/json",
    )

    assert status["status"] == "failed"
    assert status["errors"][0]["task"] == 2
    assert status["errors"][0]["message"].startswith("is not valid JSON")
    assert Item.objects.count() == 0


def test_a_label_studio_export_that_is_not_utf8_names_the_byte_and_fails_even_when_skipping(
    upload,
):
    tasks = [{"id": n, "data": {"prompt": f"q{n}", "answer1": "x", "answer2": "y"}} for n in (1, 2)]
    content = json.dumps(tasks).encode()
    broken = content.replace(b'"q2"', b'"q' + bytes([0xFF]) + b'2"')

    _res, status = upload("export.json", broken, "application/json", on_error="skip")

    assert status["status"] == "failed"
    assert status["errors"][0]["byte"] == broken.index(bytes([0xFF]))
    assert "is not UTF-8 text" in status["errors"][0]["message"]
    assert "whatever on_error says" in status["message"]
    assert Item.objects.count() == 0


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1 << 20])
def test_a_byte_that_is_not_utf8_is_found_at_its_offset_whatever_the_read_size(size):
    from feedback.imports_readers import UnreadableFile, _Utf8Text

    text = "é€𝄞 ok ".encode()  # characters of 2, 3 and 4 bytes, across read boundaries
    stream = _Utf8Text(io.BytesIO(text * 3 + b"\xc3(" + text))
    read: list[str] = []

    def read_all() -> None:
        while chunk := stream.read(size):
            read.append(chunk)

    with pytest.raises(UnreadableFile) as caught:
        read_all()

    assert caught.value.location == {"byte": len(text) * 3}
    assert "".join(read).encode() == (text * 3)[: len("".join(read).encode())]


def test_items_without_responses_wait_for_generation(upload):
    _res, status = upload("items.jsonl", jsonl({"prompt": "Generate for me"}))

    assert status["status"] == "succeeded"
    assert QueueEntry.objects.get().open_slots == 0


def test_an_expert_cannot_import_or_read_an_import(upload, api_for, expert, pairwise_campaign):
    res, _status = upload("items.jsonl", jsonl(item_object(1)))
    client = api_for(expert)

    assert client.get(f"/api/v1/imports/{res.json()['id']}/").status_code == 404
    denied = client.post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {"file": SimpleUploadedFile("x.jsonl", jsonl(item_object(9)))},
        format="multipart",
    )
    assert denied.status_code == 403
    assert client.get(f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/").status_code == 403
    assert client.get("/api/v1/imports/999999/").status_code == 404


@pytest.mark.parametrize("role", ["expert", "lead"])
def test_an_engineer_made_expert_or_lead_no_longer_reads_their_import(
    upload, api_for, engineer, role
):
    """The job's maker read it whatever their role now was, where the campaign's list of
    imports answers them 403."""
    res, _status = upload("items.jsonl", jsonl(item_object(1)))
    engineer.role = role
    engineer.save(update_fields=["role"])

    assert api_for(engineer).get(f"/api/v1/imports/{res.json()['id']}/").status_code == 404


def test_an_import_runs_once_even_if_its_task_is_delivered_twice(upload):
    from feedback.imports import import_run

    res, _status = upload("items.jsonl", jsonl(item_object(1)))
    again = import_run(import_id=res.json()["id"])

    assert again.status == "succeeded"
    assert Item.objects.count() == 1


def test_text_with_backslashes_tabs_newlines_and_emoji_is_stored_exactly(upload):
    tricky = 'C:\\path\\to\tfile\r\nline two \\N "quoted" ✓ 😀'
    row = item_object(
        1,
        prompt=[{"role": "user", "content": tricky}],
        context={"diff": "--- a\n+++ b\n\t\\x"},
        responses=[{"model": "m\\a", "text": tricky}, {"model": "b", "text": "\\N"}],
        metadata={"note": tricky},
    )
    _res, status = upload("items.jsonl", jsonl(row))

    assert status["status"] == "succeeded", status
    item = Item.objects.get()
    assert item.prompt == [{"role": "user", "content": tricky}]
    assert item.context == {"diff": "--- a\n+++ b\n\t\\x"}
    assert item.metadata == {"note": tricky}
    assert list(item.responses.values_list("model_name", "text")) == [
        ("m\\a", tricky),
        ("b", "\\N"),
    ]


def test_a_nul_character_is_an_error_naming_the_field(upload):
    _res, status = upload("items.jsonl", jsonl(item_object(1, prompt="bad\u0000prompt")))

    assert status["status"] == "failed"
    assert status["errors"][0]["field"] == "prompt"
    assert "NUL" in status["errors"][0]["message"]


def test_a_nul_character_in_an_id_a_model_or_metadata_names_the_field(upload):
    rows = [
        item_object(1, external_id="q\u00001"),
        item_object(2, responses=[{"model": "m\u0000a", "text": "A"}, {"model": "b", "text": "B"}]),
        item_object(3, metadata={"note": "a\u0000"}),
    ]
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed"
    assert [(e["line"], e["field"]) for e in status["errors"]] == [
        (1, "external_id"),
        (2, "responses[0].model"),
        (3, "metadata"),
    ]
    assert Item.objects.count() == 0


@pytest.fixture(params=["filter", "every row looked up", "no filter"])
def dedupe_mode(request, monkeypatch):
    """De-duplication three ways: the campaign's filter; a filter so small that every row is
    a possible duplicate, so every row is looked up; and no filter (a campaign too large to
    read), where each chunk asks the database for all its rows. Chunks of two items, so
    repeats fall in the same chunk and in later ones."""
    import feedback.imports

    monkeypatch.setattr(feedback.imports, "CHUNK_ITEMS", 2)
    if request.param == "every row looked up":
        monkeypatch.setattr(feedback.imports, "SEEN_BITS", 8)
    elif request.param == "no filter":
        monkeypatch.setattr(feedback.imports, "SEEN_PRELOAD_MAX", 0)
    return request.param


def test_duplicates_in_the_file_and_in_the_campaign_are_found_in_every_mode(upload, dedupe_mode):
    _res, status = upload("items.jsonl", jsonl(item_object(1), item_object(2), item_object(3)))
    assert status["created"] == 3, status

    same_content_new_id = item_object(2, external_id="q-20")
    rows = [
        item_object(4),
        item_object(2, prompt="edited"),  # line 2: id stored before this import
        same_content_new_id,  # line 3: content stored before this import
        item_object(5),
        item_object(4),  # line 5: repeats line 1 (an earlier chunk)
        item_object(7, external_id="q-60"),
        item_object(6),
        item_object(6, external_id="q-61"),  # line 8: content of line 7, in the same chunk
        item_object(8),
    ]
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "succeeded", status
    assert (status["created"], status["duplicates"]) == (5, 4)
    assert [(d["line"], d["reason"]) for d in status["duplicate_rows"]] == [
        (2, "external_id 'q-2' is already in the campaign"),
        (3, "the same prompt, context and responses are already in the campaign"),
        (5, "external_id 'q-4' appears earlier in this file"),
        (8, "the same prompt, context and responses appear earlier in this file"),
    ]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == [
        "q-1",
        "q-2",
        "q-3",
        "q-4",
        "q-5",
        "q-6",
        "q-60",
        "q-8",
    ]


def test_an_id_repeated_with_other_content_in_a_later_chunk_is_an_error(upload, dedupe_mode):
    rows = [
        item_object(1),
        item_object(2),
        item_object(3),
        item_object(1, prompt="Same id, other text"),
    ]
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed"
    assert [(e["line"], e["field"]) for e in status["errors"]] == [(4, "external_id")]
    assert Item.objects.count() == 0


def test_every_field_is_stored_as_sent(upload, pairwise_campaign):
    from datetime import timedelta

    from django.utils import timezone

    gold = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
        "context": {"k": [1, 2.5, None, True]},
        "metadata": {"big": 2**62, "nested": {"b": "é"}},
        "priority": -5,
        "is_gold": True,
        "gold_answer": {"chosen_position": 1},
        "responses": [
            {"model": "m-a", "text": "A", "format": "code"},
            {"model": "m-b", "text": "B", "format": "diff"},
        ],
    }
    _res, status = upload("items.jsonl", jsonl(gold, item_object(2, priority=1000)))

    assert status["status"] == "succeeded", status
    item = Item.objects.get(external_id=None)
    assert (item.prompt, item.context, item.metadata) == (
        gold["prompt"],
        gold["context"],
        gold["metadata"],
    )
    assert (
        item.priority,
        item.is_gold,
        item.gold_answer,
        item.queue.open_slots,
        item.queue.started,
    ) == (
        -5,
        True,
        {"chosen_position": 1},
        0,
        False,
    )
    assert abs(item.created_at - timezone.now()) < timedelta(minutes=1)
    responses = list(item.responses.all())
    assert [(r.model_name, r.text, r.format, r.position) for r in responses] == [
        ("m-a", "A", "code", 0),
        ("m-b", "B", "diff", 1),
    ]
    assert all(
        (r.generation, r.images, r.created_at) == ({}, [], item.created_at) for r in responses
    )
    other = Item.objects.get(external_id="q-2")
    assert (other.priority, other.is_gold, other.gold_answer, other.queue.open_slots) == (
        1000,
        False,
        None,
        pairwise_campaign.overlap,
    )


def test_rows_with_images_and_plain_rows_are_de_duplicated_together(upload, dedupe_mode):
    import base64

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(png, format="PNG")
    image = f"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}"
    pictured = item_object(1, context={"images": [image]})
    rows = [
        pictured,
        item_object(2),
        item_object(3),
        item_object(1, prompt="Same id as line 1, no image"),  # line 4: a later chunk
        item_object(5, context={"images": [image]}),
        pictured | {"external_id": "q-6"},  # line 6: the content of line 1
        item_object(5, context={"images": [image]}),  # line 7: repeats line 5 whole
        item_object(8),
    ]
    _res, status = upload("items.jsonl", jsonl(*rows), on_error="skip")

    assert status["status"] == "succeeded", status
    assert [(e["line"], e["field"]) for e in status["errors"]] == [(4, "external_id")]
    assert [(d["line"], d["reason"]) for d in status["duplicate_rows"]] == [
        (6, "the same prompt, context and responses appear earlier in this file"),
        (7, "external_id 'q-5' appears earlier in this file"),
    ]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == [
        "q-1",
        "q-2",
        "q-3",
        "q-5",
        "q-8",
    ]


def test_an_empty_images_list_is_the_same_item_as_none_in_a_later_chunk(upload, dedupe_mode):
    # A gold row is not a plain one, so an `images` key, even empty, once sent it the way of
    # rows with images, marked for de-duplication only after the rows of the next chunk: the
    # same item there was not looked up, and the import failed on the unique constraint.
    gold = {"is_gold": True, "gold_answer": {"chosen_position": 0}}
    emptied = item_object(2, **gold)
    emptied["responses"] = [emptied["responses"][0] | {"images": []}, emptied["responses"][1]]
    rows = [item_object(1), emptied, item_object(2, **gold) | {"external_id": "q-3"}]

    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "succeeded", status
    assert (status["created"], status["duplicates"]) == (2, 1)
    assert [(d["line"], d["reason"]) for d in status["duplicate_rows"]] == [
        (3, "the same prompt, context and responses appear earlier in this file"),
    ]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["q-1", "q-2"]


def test_an_external_id_given_as_a_float_on_a_row_with_images_is_the_same_id(upload, dedupe_mode):
    from tests.feedback.pictures import data_url, png

    pictured = item_object(1, external_id=17.0, context={"images": [data_url(png())]})
    rows = [pictured, item_object(2), item_object(3, external_id=17)]

    _res, status = upload("items.jsonl", jsonl(*rows), on_error="skip")

    assert status["status"] == "succeeded", status
    assert status["errors"] == [
        {
            "line": 3,
            "field": "external_id",
            "message": "'17' appears earlier in this file with other content",
        }
    ]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["17", "q-2"]


def test_a_refused_image_does_not_hide_the_rows_other_errors(upload):
    bad = item_object(
        2,
        context={"images": ["data:image/png;base64,@@@"]},
        responses=[{"model": "a", "text": ""}, {"model": "b", "text": "x"}],
    )

    _res, status = upload("items.jsonl", jsonl(item_object(1), bad))

    assert status["status"] == "failed"
    assert sorted((e["line"], e["field"]) for e in status["errors"]) == [
        (2, "context.images[0]"),
        (2, "responses[0].text"),
    ]
    assert Item.objects.count() == 0


def test_a_model_name_longer_than_the_column_is_an_error_naming_the_field(upload):
    rows = [
        item_object(1),
        item_object(2, responses=[{"model": "m" * 201, "text": "A"}, {"model": "b", "text": "B"}]),
    ]
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"line": 2, "field": "responses[0].model", "message": "is longer than 200 characters"}
    ]


def test_an_error_while_writing_a_chunk_reaches_the_importing_thread(pairwise_campaign):
    import psycopg

    from feedback.imports import _CopyWriter

    copier = _CopyWriter()
    try:
        copier.submit(b"not\ta\tvalid\trow\n", b"", b"")
        with pytest.raises(psycopg.Error):
            copier.drain()
        with pytest.raises(psycopg.Error):
            copier.submit(b"", b"", b"")
    finally:
        copier.close()


def test_nan_or_infinity_in_a_csv_json_column_names_the_row_and_column(upload):
    csv_text = (
        "external_id,prompt,context,response_1,response_2\n"
        'n-1,Question,"{""score"": 1}",A,B\n'
        'n-2,Question 2,"{""score"": NaN}",A,B\n'
        'n-3,Question 3,"{""score"": -Infinity}",A,B\n'
    )
    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "failed"
    assert [(e["row"], e["field"]) for e in status["errors"]] == [(2, "context"), (3, "context")]
    assert "NaN is not a JSON number" in status["errors"][0]["message"]
    assert "-Infinity is not a JSON number" in status["errors"][1]["message"]
    assert Item.objects.count() == 0


def test_a_row_the_database_refuses_fails_the_import_with_the_databases_reason(upload):
    """The database refuses a row of the first chunk while the next one is being prepared:
    the job fails with PostgreSQL's own reason (not "current transaction is aborted"), is not
    left running, and stores nothing."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.external_id = 'boom' THEN "
            "RAISE EXCEPTION 'item boom is refused by the database'; END IF; RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_boom BEFORE INSERT ON feedback_item "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_boom()"
        )
    rows = [item_object(n) for n in range(12_000)]
    rows[10] = item_object(10, external_id="boom")
    _res, status = upload("items.jsonl", jsonl(*rows))

    assert status["status"] == "failed", status
    assert "item boom is refused by the database" in status["message"], status["message"]
    assert "aborted" not in status["message"]
    assert status["created"] == 0
    assert Item.objects.count() == 0


def test_overlapping_imports_leave_the_interpreters_settings_as_they_found_them():
    import gc
    import sys
    import threading

    from feedback.imports import _interpreter_for_import

    before = (gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count())
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with _interpreter_for_import():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with _interpreter_for_import():
            second_in.set()
            first_out.wait(5)
            # The first import has finished; the second still runs with the import settings.
            assert gc.get_threshold() == (100_000, 20, 100)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert (gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count()) == before


def test_an_import_in_a_process_that_froze_its_objects_leaves_them_frozen():
    """A web worker forked from gunicorn's preloaded master has the app frozen (see
    deploy/gunicorn.conf.py); an import run there must not hand it back to the collector."""
    import gc

    from feedback.imports import _interpreter_for_import

    assert gc.get_freeze_count() == 0
    gc.freeze()  # what the master did before forking
    try:
        frozen = gc.get_freeze_count()
        with _interpreter_for_import():
            pass
        # Still frozen (give or take objects the interpreter moved meanwhile), not handed back.
        assert gc.get_freeze_count() > frozen * 0.9, (gc.get_freeze_count(), frozen)
    finally:
        gc.unfreeze()


def test_an_import_leaves_the_callers_foreign_keys_deferred(upload):
    """The import checks foreign keys chunk by chunk; the transaction it ran in gets Django's
    deferred checks back, so a later statement there is checked at the commit as usual."""
    from django.db import connection

    _res, status = upload("items.jsonl", jsonl(item_object(1), item_object(2)))
    assert status["status"] == "succeeded"

    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT probe")
        # Deferred: a dangling item id is accepted now and would only fail at the commit.
        cursor.execute(
            "INSERT INTO feedback_response (item_id, model_name, text, format, position, "
            "generation, images, created_at) "
            "VALUES (-1, 'm', 't', 'text', 0, '{}', '[]', now())"
        )
        cursor.execute("ROLLBACK TO SAVEPOINT probe")


def test_a_parquet_file_is_read_a_row_group_at_a_time(tmp_path):
    """While its rows are read, pyarrow holds one row group (a batch never spans two: 1000
    rows here, about 3 MB), however large the file: never the whole of it (pyarrow's default
    pre-buffering reads the column chunks of every row group ahead, 44 MB here; an import's
    memory grew with its file, 568 MB for a 229 MB one)."""
    from feedback.imports_readers import read_parquet

    noise = random.Random(3)
    rows = [
        {
            "prompt": f"prompt {n} " + noise.randbytes(200).hex(),
            "response_a": noise.randbytes(150).hex(),
            "response_b": noise.randbytes(150).hex(),
        }
        for n in range(40_000)
    ]
    path = tmp_path / "large.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1_000, compression="none")
    size = path.stat().st_size
    peak = 0
    prompts = []
    for row in read_parquet(str(path), None):
        peak = max(peak, pa.total_allocated_bytes())
        prompts.append(row.raw["prompt"][:13])
    assert len(prompts) == 40_000
    assert prompts[-1] == "prompt 39999 "
    assert size > 40_000_000  # 40 row groups
    assert peak < size / 4, f"pyarrow held {peak:,} bytes reading a file of {size:,}"


def test_a_parquet_file_of_large_images_is_read_a_few_mib_at_a_time(tmp_path):
    """A batch of 2048 rows of 100 KB images is 200 MB before it is even Python, and one
    spanned row groups: a batch holds what PARQUET_BATCH_BYTES of its row group's data hold,
    and a row group larger than that (12.8 MB here) is read through a buffer, not whole."""
    from feedback.imports_readers import PARQUET_BATCH_BYTES, read_parquet

    noise = random.Random(5)
    last = noise.randbytes(64 * 1024)
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": noise.randbytes(64 * 1024), "path": None} for _ in range(599)]
                + [{"bytes": last, "path": None}],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "question": [f"What is in picture {n}?" for n in range(600)],
            "response_a": ["noise"] * 600,
            "response_b": ["static"] * 600,
        }
    )
    path = tmp_path / "vision.parquet"
    # Pages of a few images, as Hugging Face datasets writes them (pyarrow's default writer
    # makes a page of a whole row group of values this large: a page is read whole).
    pq.write_table(
        table,
        path,
        row_group_size=200,
        use_dictionary=False,
        write_batch_size=8,
        compression="none",
    )
    del table
    size = path.stat().st_size
    before = pa.total_allocated_bytes()
    peak = 0
    rows = []
    for row in read_parquet(str(path), None):
        peak = max(peak, pa.total_allocated_bytes() - before)
        (message,) = row.raw["prompt"]
        rows.append((row.location["row"], message["content"]))
    assert size > 39_000_000  # 3 row groups of 200 images
    assert rows == [(n + 1, f"What is in picture {n}?") for n in range(600)]
    assert message["images"] == [
        "data:application/octet-stream;base64," + base64.b64encode(last).decode()
    ]
    assert peak < 2 * PARQUET_BATCH_BYTES, f"pyarrow held {peak:,} bytes of a file of {size:,}"


@pytest.mark.parametrize("column", ["q\u0000", "q\ud800"])
def test_a_mapping_that_cannot_be_stored_is_refused_naming_it(upload, column):
    """The mapping is stored with the job: a NUL or a lone surrogate in it is a 400, as for
    any other bad mapping, and nothing is stored."""
    mapping = json.dumps({"prompt": column})  # escaped: the request's text holds no such character
    res, _status = upload("items.csv", b"q,chosen,rejected\nQ,A,B\n", mapping=mapping)

    assert res.status_code == 400, res.content
    assert list(res.json()["error"]["fields"]) == ["mapping"]
    assert ImportJob.objects.count() == 0


def test_chunks_of_large_items_are_bounded_by_their_bytes(pairwise_campaign):
    """5,000 items of 1.2 MB would be 6 GB in one chunk: a chunk also ends at CHUNK_BYTES."""
    from feedback.imports import CHUNK_BYTES, _prepare_chunks, _Tally
    from feedback.imports_readers import SourceRow

    text = "x" * 600_000
    rows = (
        SourceRow({"line": n}, item_object(n, responses=[{"model": "a", "text": text}] * 2))
        for n in range(1, 41)
    )

    chunks = list(_prepare_chunks(rows, pairwise_campaign, True, _Tally()))

    sizes = [sum(len(r.line) + sum(map(len, r.response_lines)) for r in c) for c in chunks]
    assert sum(map(len, chunks)) == 40
    assert len(chunks) >= 5
    assert max(sizes) < CHUNK_BYTES + 1_300_000  # the item that crossed the line, at most


def test_chunks_of_items_with_inline_images_are_bounded_by_their_bytes(pairwise_campaign):
    """Rows with images go on raw (their images are stored by the importing thread): they
    count by their JSON's size."""
    from feedback.imports import CHUNK_BYTES, _prepare_chunks, _Tally
    from feedback.imports_readers import SourceRow

    image = {"data": "data:image/png;base64," + "A" * 2_000_000}
    prompt = [{"role": "user", "content": "Look", "images": [image]}]
    rows = (SourceRow({"line": n}, item_object(n, prompt=prompt)) for n in range(1, 21))

    chunks = list(_prepare_chunks(rows, pairwise_campaign, True, _Tally()))

    assert sum(map(len, chunks)) == 20
    assert max(map(len, chunks)) <= CHUNK_BYTES // 2_000_000 + 1


def test_a_mapping_nested_too_deeply_to_read_is_refused_naming_it(upload):
    res, _status = upload("items.csv", b"q,chosen,rejected\nQ,A,B\n", mapping="[" * 100_000)

    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {"mapping": ["is nested too deeply to be read"]}


def test_a_file_sent_with_curl_T_gets_the_api_error_saying_how_to_send_it(
    api_for, engineer, pairwise_campaign
):
    """`curl -T items.jsonl …/imports/` PUTs the file to `…/imports/items.jsonl` (curl adds the
    file's name to a URL ending in /). That path is no endpoint: the answer is the API's JSON
    404, saying how a file is sent."""
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/items.jsonl"
    res = client.put(url, jsonl(item_object(1)), content_type="application/octet-stream")

    assert res.status_code == 404
    assert res["Content-Type"] == "application/json"
    error = res.json()["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith(f"No API endpoint at PUT {url}."), error["message"]
    assert "curl -F file=@items.jsonl" in error["message"]
    assert ImportJob.objects.count() == 0


def test_a_finished_import_has_read_the_whole_file(import_status):
    content = jsonl(*(item_object(n) for n in range(1, 8)))

    status = import_status("items.jsonl", content)

    assert status["status"] == "succeeded", status["message"]
    assert status["size_bytes"] == len(content)
    assert status["progress"] == {"rows_read": 7, "bytes_read": len(content)}


def test_an_integer_too_long_to_read_in_a_mapping_is_refused_naming_it(upload):
    res, _status = upload(
        "items.csv", b"q,chosen,rejected\nQ,A,B\n", mapping=f'{{"prompt": "q", "x": {"9" * 5_000}}}'
    )

    assert res.status_code == 400, res.content
    assert list(res.json()["error"]["fields"]) == ["mapping"]
    assert "could not be read" in res.json()["error"]["fields"]["mapping"][0]


def test_a_csv_written_on_windows_repeats_the_jsonl_items_it_holds(upload, pairwise_campaign):
    """The same items as JSONL (LF) and then as a CSV whose cells have CRLF line breaks: the
    CSV's are duplicates of the stored ones, not new items."""
    first = {
        "prompt": "Clause 4:\nterminate on notice?",
        "responses": [{"model": "a", "text": "Yes.\nWith 30 days."}, {"model": "b", "text": "No."}],
    }
    _res, status = upload("items.jsonl", jsonl(first))
    assert status["created"] == 1, status
    csv_text = (
        "prompt,response_1,response_1_model,response_2,response_2_model\r\n"
        '"Clause 4:\r\nterminate on notice?","Yes.\r\nWith 30 days.",a,No.,b\r\n'
        '"Clause 5:\r\nassign?",Maybe.,a,No.,b\r\n'
    )

    _res, status = upload("items.csv", csv_text.encode(), "text/csv")

    assert status["status"] == "succeeded", status
    assert (status["created"], status["duplicates"]) == (1, 1), status
    assert status["duplicate_rows"][0]["row"] == 1  # rows count from the first after the header
    assert "already in the campaign" in status["duplicate_rows"][0]["reason"]
    assert Item.objects.get(prompt="Clause 5:\r\nassign?").responses.count() == 2
