"""The readers of import files: what a row of CSV, Parquet or Label Studio becomes."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback.models import Item, Response

pytestmark = pytest.mark.django_db


@pytest.fixture
def upload(api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks):
    """POST a file to the campaign's imports; returns the import's status."""
    client = api_for(engineer)

    def send(name: str, content: bytes, **fields: Any) -> dict[str, Any]:
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(
                f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
                {
                    "file": SimpleUploadedFile(name, content, "application/octet-stream"),
                    **fields,
                },
                format="multipart",
            )
        assert res.status_code == 202, res.json()
        return client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    return send


def _csv(*rows: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


# --- mappings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "field", "message"),
    [
        (
            {
                "prompt": "question",
                "responses": [
                    {"column": "answer_x", "model_column": "model_x"},
                    {"column": "answer_y", "model": "baseline"},
                ],
            },
            "mapping.responses[0].model_column",
            "column 'model_x' is not in the file",
        ),
        (
            {
                "prompt": "question",
                "responses": ["answer_x", "answer_y"],
                "metadata": ["source", "difficulty"],
            },
            "mapping.metadata",
            "column 'difficulty' is not in the file",
        ),
    ],
    ids=["model_column", "metadata"],
)
def test_a_mapping_naming_a_column_the_file_lacks_fails_the_import(upload, mapping, field, message):
    content = _csv(["question", "answer_x", "answer_y", "source"], ["What?", "yes", "no", "web"])

    status = upload("data.csv", content, mapping=json.dumps(mapping))

    assert status["status"] == "failed"
    assert status["errors"] == [{"field": field, "message": message}]
    assert Item.objects.count() == 0


def test_a_metadata_column_is_merged_with_the_other_columns(upload):
    content = _csv(
        ["prompt", "chosen", "rejected", "metadata", "source", "difficulty"],
        ["Q1?", "a", "b", json.dumps({"domain": "law"}), "web", "hard"],
        ["Q2?", "a", "b", "", "book", ""],
    )

    status = upload("pairs.csv", content)

    assert status["status"] == "succeeded", status
    assert Item.objects.get(prompt="Q1?").metadata == {
        "domain": "law",
        "source": "web",
        "difficulty": "hard",
    }
    assert Item.objects.get(prompt="Q2?").metadata == {"source": "book"}


def test_a_key_of_the_metadata_column_that_is_also_a_column_is_an_error_of_the_row(upload):
    content = _csv(
        ["prompt", "chosen", "rejected", "metadata", "source"],
        ["Q1?", "a", "b", json.dumps({"domain": "law"}), "web"],
        ["Q2?", "a", "b", json.dumps({"source": "book"}), "web"],
    )

    status = upload("pairs.csv", content)

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 2,
            "line": 3,
            "field": "source",
            "message": "is also a key of the metadata column's object; rename the column or"
            " the key",
        }
    ]


# --- CSV response cells ------------------------------------------------------------------


def test_a_csv_response_cell_may_hold_a_chat_or_an_object_with_text(upload):
    content = _csv(
        ["prompt", "chosen", "rejected"],
        [
            "What is 2+2?",
            json.dumps(
                [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
            ),
            json.dumps({"text": "5"}),
        ],
    )

    status = upload("pairs.csv", content)

    assert status["status"] == "succeeded", status
    assert sorted(Response.objects.values_list("model_name", "text")) == [
        ("chosen", "4"),
        ("rejected", "5"),
    ]


@pytest.mark.parametrize(
    "answer",
    [
        '{"text": "x", "score": 1}',
        '{"answer": 4}',
        '[{"a": 1}]',
        '{"text": 5}',
        '{"text": "unclosed',
        "[1, 2, 3]",
    ],
)
def test_a_csv_response_that_is_other_json_stays_as_written(upload, answer):
    status = upload("pairs.csv", _csv(["prompt", "chosen", "rejected"], ["Q?", answer, "no"]))

    assert status["status"] == "succeeded", status
    assert Response.objects.get(model_name="chosen").text == answer
