"""The readers of import files: what a row of CSV, Parquet or Label Studio becomes."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from feedback import imports_readers
from feedback.models import Item, ItemImage, Response

pytestmark = pytest.mark.django_db

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
# A chat whose content is a list of parts, TRL's vision layout.
CHAT_OF_PARTS = pa.list_(
    pa.struct(
        [
            ("role", pa.string()),
            ("content", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string())]))),
        ]
    )
)


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


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)  # this test's own image files only


def _png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(out, "PNG")
    return out.getvalue()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _csv(*rows: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _chat(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


# --- images of a Hugging Face dataset ------------------------------------------------------


def test_a_trl_vision_preference_dataset_imports_its_images_with_the_prompt(
    upload, media, tmp_path
):
    import datasets

    red, blue = Image.new("RGB", (8, 6), "red"), Image.new("RGB", (5, 4), "blue")
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "chosen": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "rejected": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        }
    )
    dataset = datasets.Dataset.from_dict(
        {
            "images": [[red], [red, blue]],
            "prompt": [_chat("user", "What is shown?"), _chat("user", "Which is larger?")],
            "chosen": [_chat("assistant", "A red square"), _chat("assistant", "The red one")],
            "rejected": [_chat("assistant", "A cat"), _chat("assistant", "The blue one")],
        },
        features=features,
    )
    path = tmp_path / "train.parquet"
    dataset.to_parquet(str(path))

    status = upload("train.parquet", path.read_bytes())

    assert status["status"] == "succeeded", status
    assert ItemImage.objects.count() == 2  # the red image is stored once
    stored = {(i.width, i.height): i.pk for i in ItemImage.objects.all()}
    item = Item.objects.get(prompt__0__content="Which is larger?")
    assert item.prompt == [
        {
            "role": "user",
            "content": "Which is larger?",
            "images": [
                {"id": stored[(8, 6)], "content_type": "image/png", "width": 8, "height": 6},
                {"id": stored[(5, 4)], "content_type": "image/png", "width": 5, "height": 4},
            ],
        }
    ]
    assert sorted(item.responses.values_list("model_name", "text")) == [
        ("chosen", "The red one"),
        ("rejected", "The blue one"),
    ]
    assert item.metadata == {}


def test_content_parts_become_text_and_the_images_go_to_their_places(upload, media):
    """TRL's vision layout: content as parts, {"type": "image"} where an image goes."""
    table = pa.table(
        {
            "images": pa.array(
                [[{"bytes": _png("red"), "path": None}, {"bytes": _png("blue"), "path": None}]],
                pa.list_(HF_IMAGE),
            ),
            "prompt": pa.array(
                [
                    [
                        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "text": None},
                                {"type": "text", "text": "This one,"},
                                {"type": "text", "text": "or"},
                                {"type": "image", "text": None},
                            ],
                        },
                    ]
                ],
                CHAT_OF_PARTS,
            ),
            "chosen": pa.array(
                [[{"role": "assistant", "content": [{"type": "text", "text": "Left"}]}]],
                CHAT_OF_PARTS,
            ),
            "rejected": pa.array(
                [[{"role": "assistant", "content": [{"type": "text", "text": "Right"}]}]],
                CHAT_OF_PARTS,
            ),
        }
    )

    status = upload("train.parquet", _parquet(table))

    assert status["status"] == "succeeded", status
    item = Item.objects.get()
    assert item.prompt[0] == {"role": "system", "content": "Be brief."}
    assert item.prompt[1]["content"] == "This one,\nor"
    assert [i["width"] for i in item.prompt[1]["images"]] == [8, 8]
    assert len({i["id"] for i in item.prompt[1]["images"]}) == 2
    assert sorted(item.responses.values_list("text", flat=True)) == ["Left", "Right"]


def test_one_image_beside_a_text_prompt_makes_it_a_user_message(upload, media):
    table = pa.table(
        {
            "image": pa.array([{"bytes": _png("red"), "path": None}], HF_IMAGE),
            "question": ["What colour?"],
            "response_a": ["Red"],
            "response_b": ["Blue"],
        }
    )

    status = upload("vqa.parquet", _parquet(table))

    assert status["status"] == "succeeded", status
    prompt = Item.objects.get().prompt
    assert [(m["role"], m["content"], len(m["images"])) for m in prompt] == [
        ("user", "What colour?", 1)
    ]


def test_images_that_do_not_fit_the_places_of_the_prompt_are_an_error_of_the_column(upload, media):
    table = pa.table(
        {
            "images": pa.array([[{"bytes": _png("red"), "path": None}]], pa.list_(HF_IMAGE)),
            "prompt": pa.array(
                [[{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}]],
                CHAT_OF_PARTS,
            ),
            "chosen": ["a"],
            "rejected": ["b"],
        }
    )

    status = upload("train.parquet", _parquet(table))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 1,
            "field": "images",
            "message": 'holds 1 image; the prompt has 2 places for images ({"type": "image"})',
        }
    ]
    assert ItemImage.objects.count() == 0


def test_an_image_known_only_by_its_path_is_an_error_naming_the_column(upload):
    table = pa.table(
        {
            "images": pa.array([[{"bytes": None, "path": "/data/cat.png"}]], pa.list_(HF_IMAGE)),
            "prompt": ["What is it?"],
            "chosen": ["A cat"],
            "rejected": ["A dog"],
        }
    )

    status = upload("train.parquet", _parquet(table))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 1,
            "field": "images[0]",
            "message": "has no image bytes, only the path '/data/cat.png', which the import"
            " cannot read: write the Parquet file with the images in it",
        }
    ]


def test_binary_data_is_an_error_naming_its_column_never_text_in_metadata(upload):
    table = pa.table(
        {
            "prompt": ["Q1", "Q2", "Q3"],
            "chosen": ["a", "b", "c"],
            "rejected": ["x", "y", "z"],
            "blob": pa.array([b"\x00\x01binary", None, None], pa.binary()),
            "extra": pa.array(
                [None, {"raw": b"\xff\x00"}, None], pa.struct([("raw", pa.binary())])
            ),
            "mask": pa.array([None, None, {"bytes": _png("red"), "path": None}], HF_IMAGE),
        }
    )

    status = upload("train.parquet", _parquet(table), on_error="skip")

    assert status["errors"] == [
        {"row": 1, "field": "blob", "message": imports_readers.BINARY_MESSAGE},
        {"row": 2, "field": "extra", "message": imports_readers.BINARY_MESSAGE},
        {"row": 3, "field": "mask", "message": imports_readers.IMAGE_COLUMN_MESSAGE},
    ]
    assert Item.objects.count() == 0

    # A mapping that leaves them out of metadata imports the rows.
    status = upload(
        "train.parquet",
        _parquet(table),
        mapping=json.dumps(
            {"prompt": "prompt", "responses": ["chosen", "rejected"], "metadata": []}
        ),
    )
    assert status["status"] == "succeeded", status
    assert Item.objects.count() == 3


# --- Parquet nulls --------------------------------------------------------------------------


def test_a_null_field_of_a_parquet_struct_is_absent(upload):
    """A struct column has every key in every row: the one a row's object lacks comes back
    null, and is read as absent, as the same object in JSONL would be."""
    rows = [
        {
            "prompt": [{"role": "user", "content": "Q1", "images": None}],
            "responses": [
                {"model": "a", "text": "x", "format": "code"},
                {"model": "b", "text": "y", "format": None},
            ],
            "metadata": {"source": "web", "difficulty": None},
        },
        {
            "prompt": [{"role": "user", "content": "Q2", "images": None}],
            "responses": [{"model": "a", "text": "x2"}, {"model": "b", "text": "y2"}],
            "metadata": {"source": None, "difficulty": 3},
        },
    ]
    status = upload("items.parquet", _parquet(pa.Table.from_pylist(rows)))

    assert status["status"] == "succeeded", status
    first = Item.objects.get(prompt=[{"role": "user", "content": "Q1"}])
    assert first.metadata == {"source": "web"}
    assert sorted(first.responses.values_list("model_name", "format")) == [
        ("a", "code"),
        ("b", "markdown"),
    ]
    assert Item.objects.get(prompt__0__content="Q2").metadata == {"difficulty": 3}


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
