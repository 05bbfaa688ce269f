"""The readers of import files: what a row of CSV, Parquet or Label Studio becomes, and the
limits that keep a file in any shape from being read whole."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow as pa
import pytest
from django.core.files import File
from PIL import Image

from feedback import imports_readers
from feedback.imports_readers import UnreadableFile, read_jsonl, read_label_studio
from feedback.models import Item, ItemImage, Response
from tests.feedback.import_files import parquet
from tests.feedback.pictures import data_url

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
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)  # this test's own image files only


def _png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(out, "PNG")
    return out.getvalue()


def _csv(*rows: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _chat(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


# --- images of a Hugging Face dataset ------------------------------------------------------


def test_a_trl_vision_preference_dataset_imports_its_images_with_the_prompt(
    import_status, media, tmp_path
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

    status = import_status("train.parquet", path.read_bytes())

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


def test_content_parts_become_text_and_the_images_go_to_their_places(import_status, media):
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

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    item = Item.objects.get()
    assert item.prompt[0] == {"role": "system", "content": "Be brief."}
    assert item.prompt[1]["content"] == "This one,\nor"
    assert [i["width"] for i in item.prompt[1]["images"]] == [8, 8]
    assert len({i["id"] for i in item.prompt[1]["images"]}) == 2
    assert sorted(item.responses.values_list("text", flat=True)) == ["Left", "Right"]


def test_one_image_beside_a_text_prompt_makes_it_a_user_message(import_status, media):
    table = pa.table(
        {
            "image": pa.array([{"bytes": _png("red"), "path": None}], HF_IMAGE),
            "question": ["What colour?"],
            "response_a": ["Red"],
            "response_b": ["Blue"],
        }
    )

    status = import_status("vqa.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    prompt = Item.objects.get().prompt
    assert [(m["role"], m["content"], len(m["images"])) for m in prompt] == [
        ("user", "What colour?", 1)
    ]


def test_images_that_do_not_fit_the_places_of_the_prompt_are_an_error_of_the_column(
    import_status, media
):
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

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 1,
            "field": "images",
            "message": 'holds 1 image; the prompt has 2 places for images ({"type": "image"})',
        }
    ]
    assert ItemImage.objects.count() == 0


def test_an_image_known_only_by_its_path_is_an_error_naming_the_column(import_status):
    table = pa.table(
        {
            "images": pa.array([[{"bytes": None, "path": "/data/cat.png"}]], pa.list_(HF_IMAGE)),
            "prompt": ["What is it?"],
            "chosen": ["A cat"],
            "rejected": ["A dog"],
        }
    )

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 1,
            "field": "images[0]",
            "message": "has no image bytes, only the path '/data/cat.png', which the import"
            " cannot read: write the Parquet file with the images in it",
        }
    ]


def test_a_bad_content_part_is_named_beside_an_unreadable_images_cell(import_status):
    table = pa.table(
        {
            "images": pa.array([[{"bytes": None, "path": "/data/cat.png"}]], pa.list_(HF_IMAGE)),
            "prompt": pa.array(
                [[{"role": "user", "content": [{"type": "video", "text": None}]}]],
                CHAT_OF_PARTS,
            ),
            "chosen": ["A cat"],
            "rejected": ["A dog"],
        }
    )

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "failed"
    assert [(e["field"], e["message"]) for e in status["errors"]] == [
        (
            "images[0]",
            "has no image bytes, only the path '/data/cat.png', which the import"
            " cannot read: write the Parquet file with the images in it",
        ),
        (
            "prompt",
            'prompt[0].content[0] must be {"type": "text", "text": ...} or {"type": "image"}',
        ),
    ]
    assert Item.objects.count() == 0


def test_binary_data_is_an_error_naming_its_column_never_text_in_metadata(import_status):
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

    status = import_status("train.parquet", parquet(table), on_error="skip")

    assert status["errors"] == [
        {"row": 1, "field": "blob", "message": imports_readers.BINARY_MESSAGE},
        {"row": 2, "field": "extra", "message": imports_readers.BINARY_MESSAGE},
        {"row": 3, "field": "mask", "message": imports_readers.IMAGE_COLUMN_MESSAGE},
    ]
    assert Item.objects.count() == 0

    # A mapping that leaves them out of metadata imports the rows.
    status = import_status(
        "train.parquet",
        parquet(table),
        mapping=json.dumps(
            {"prompt": "prompt", "responses": ["chosen", "rejected"], "metadata": []}
        ),
    )
    assert status["status"] == "succeeded", status
    assert Item.objects.count() == 3


# --- images in CSV and Label Studio ---------------------------------------------------------


def _prompt_images(item: Item) -> list[int]:
    if isinstance(item.prompt, str):  # text alone
        return []
    return [image["id"] for m in item.prompt for image in m.get("images", [])]


def _prompt_text(item: Item) -> str:
    return item.prompt if isinstance(item.prompt, str) else item.prompt[0]["content"]


def test_a_label_studio_tasks_image_goes_with_its_prompt_and_tells_it_apart(import_status, media):
    """Two tasks that differ only by their image are two items, each shown with its image;
    the image is not left in metadata, where experts would not see it."""
    tasks = [
        {
            "id": n,
            "data": {
                "prompt": "Is this chart right?",
                "image": data_url(_png(colour)),
                "answer1": "Yes",
                "answer2": "No",
            },
        }
        for n, colour in ((1, "red"), (2, "blue"))
    ]

    status = import_status("export.json", json.dumps(tasks).encode())

    assert status["status"] == "succeeded", status
    assert (status["created"], status["duplicate_rows"]) == (2, [])
    items = list(Item.objects.order_by("external_id"))
    assert [i.external_id for i in items] == ["ls-1", "ls-2"]
    for item in items:
        assert [(m["role"], m["content"]) for m in item.prompt] == [
            ("user", "Is this chart right?")
        ]
        assert "image" not in item.metadata
    first, second = (_prompt_images(i) for i in items)
    assert len(first) == len(second) == 1
    assert first != second
    colours = {ItemImage.objects.get(pk=i[0]).file.open().read() for i in (first, second)}
    assert colours == {_png("red"), _png("blue")}


def test_a_csv_images_column_holds_data_urls_and_files_sent_with_the_import(import_status, media):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = _csv(
        ["prompt", "images", "chosen", "rejected"],
        ["Two charts", json.dumps([data_url(_png("red")), "upload:b.png"]), "x", "y"],
        ["One chart", "upload:b.png", "x", "y"],
        ["No chart", "", "x", "y"],
    )

    status = import_status(
        "rows.csv", body, images=SimpleUploadedFile("b.png", _png("blue"), "image/png")
    )

    assert status["status"] == "succeeded", status
    counts = {_prompt_text(i): len(_prompt_images(i)) for i in Item.objects.all()}
    assert counts == {"Two charts": 2, "One chart": 1, "No chart": 0}


def test_an_images_column_of_other_text_is_kept_in_metadata_as_before(import_status, media):
    """A Label Studio image project's upload paths, a caption or a path name no image the
    import can read: such a cell is the row's metadata, as any other column's, and the row is
    imported; so is a JSON object that only looks like an image. A cell that names images
    beside such text is an error of the column, as is a reference that is not an image."""
    tasks = [
        {
            "id": 1,
            "data": {
                "prompt": "Q1",
                "image": "/data/upload/1/cat.jpg",
                "answer1": "a",
                "answer2": "b",
            },
        },
        {
            "id": 2,
            "data": {"prompt": "Q2", "image": {"bytes": "abc"}, "answer1": "a", "answer2": "b"},
        },
        {"id": 3, "data": {"prompt": "Q3", "image": "  ", "answer1": "a", "answer2": "b"}},
    ]

    status = import_status("export.json", json.dumps(tasks).encode())

    assert status["status"] == "succeeded", status
    kept = {_prompt_text(i): i.metadata.get("image") for i in Item.objects.all()}
    assert kept == {"Q1": "/data/upload/1/cat.jpg", "Q2": {"bytes": "abc"}, "Q3": "  "}
    assert ItemImage.objects.count() == 0

    body = _csv(
        ["prompt", "images", "chosen", "rejected"],
        ["Mixed", json.dumps([data_url(_png("red")), "https://x.test/c.png"]), "a", "b"],
    )
    failed = import_status("rows.csv", body)

    assert failed["status"] == "failed"
    assert failed["errors"] == [
        {
            "row": 1,
            "line": 2,
            "field": "images[1]",
            "message": "is not an image the import can read ('https://x.test/c.png'): give each"
            " image as a data: URL, or as upload:<file name> with the file sent beside the"
            " import (nothing is fetched from an address)",
        }
    ]


def test_an_image_cell_of_text_clashing_with_the_metadata_object_is_an_error(import_status):
    """Kept as metadata, the image column's text meets the metadata column's object as any
    other column does: a key in both is an error, not one value silently lost."""
    body = _csv(
        ["prompt", "image", "metadata", "chosen", "rejected"],
        ["Q", "a cat", json.dumps({"image": "x.png", "k": 1}), "a", "b"],
    )

    status = import_status("rows.csv", body)

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 1,
            "line": 2,
            "field": "image",
            "message": "is also a key of the metadata column's object; rename the column or the"
            " key",
        }
    ]


def test_a_quoted_csv_reference_and_a_categorical_parquet_column_give_images(import_status, media):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = _csv(["prompt", "image", "chosen", "rejected"], ["Q", '"upload:a.png"', "x", "y"])
    status = import_status(
        "rows.csv", body, images=SimpleUploadedFile("a.png", _png("red"), "image/png")
    )
    assert status["status"] == "succeeded", status
    assert len(_prompt_images(Item.objects.get())) == 1

    # pandas writes a Categorical column as dictionary<string>.
    table = pa.table(
        {
            "prompt": ["Q2"],
            "image": pa.array([data_url(_png("blue"))]).dictionary_encode(),
            "chosen": ["x"],
            "rejected": ["y"],
        }
    )
    status = import_status("train.parquet", parquet(table))
    assert status["status"] == "succeeded", status
    assert len(_prompt_images(Item.objects.get(prompt__contains=[{"content": "Q2"}]))) == 1


def test_a_parquet_text_column_named_image_of_captions_stays_metadata(import_status):
    table = pa.table(
        {"prompt": ["Q"], "image": ["a photo of a cat"], "chosen": ["a"], "rejected": ["b"]}
    )

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    assert Item.objects.get().metadata == {"image": "a photo of a cat"}


@pytest.mark.parametrize(
    ("first", "later", "message"),
    [
        (
            {},
            "image",
            "holds images, but this column does not give the prompts their images, so they would"
            " not be shown (a Label Studio export takes the key from its first task: give that"
            " task the key too, an empty list for none)",
        ),
        (
            {"image": []},
            "images",
            "holds images, but the image column gives the prompt its images: put a row's images"
            " in one of them",
        ),
    ],
    ids=["first-task-has-no-key", "first-task-has-the-other-key"],
)
def test_a_label_studio_task_with_images_under_a_key_the_first_task_lacks_is_an_error(
    import_status, first, later, message
):
    """Read as the first task says, its images would be metadata, which experts are not shown."""
    pair = {"answer1": "a", "answer2": "b"}
    tasks = [
        {"id": 1, "data": {"prompt": "Plain", **first, **pair}},
        {"id": 2, "data": {"prompt": "Pictured", later: [data_url(_png("red"))], **pair}},
    ]

    status = import_status("export.json", json.dumps(tasks).encode())

    assert status["status"] == "failed"
    assert status["errors"] == [{"task": 2, "task_id": "2", "field": later, "message": message}]
    assert not Item.objects.exists()


def test_a_parquet_images_column_of_data_urls_gives_the_prompt_its_images(import_status, media):
    table = pa.table(
        {
            "prompt": ["What colour?"],
            "images": [[data_url(_png("red"))]],
            "chosen": ["Red"],
            "rejected": ["Blue"],
        }
    )

    status = import_status("train.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    assert len(_prompt_images(Item.objects.get())) == 1


# --- Parquet nulls --------------------------------------------------------------------------


def test_a_null_field_of_a_parquet_struct_is_absent(import_status):
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
    status = import_status("items.parquet", parquet(pa.Table.from_pylist(rows)))

    assert status["status"] == "succeeded", status
    first = Item.objects.get(prompt=[{"role": "user", "content": "Q1"}])
    assert first.metadata == {"source": "web"}
    assert sorted(first.responses.values_list("model_name", "format")) == [
        ("a", "code"),
        ("b", "markdown"),
    ]
    assert Item.objects.get(prompt__0__content="Q2").metadata == {"difficulty": 3}


def test_a_parquet_response_cell_of_an_object_without_text_is_named_not_called_empty(
    import_status,
):
    rows = [
        {"prompt": "Q1", "chosen": {"answer": 4}, "rejected": {"answer": 5}},
        {"prompt": "Q2", "chosen": {"answer": 6}, "rejected": {"answer": 7}},
    ]
    status = import_status("prefs.parquet", parquet(pa.Table.from_pylist(rows)))

    assert status["status"] == "failed", status
    assert status["errors"][0] == {
        "row": 1,
        "field": "chosen",
        "message": 'is an object without "text" (its keys: answer); a response cell is text,'
        ' a chat, or {"text": ...}',
    }
    assert Item.objects.count() == 0


# --- empty response cells ----------------------------------------------------------------

PAIR_COUNT = (
    "a pairwise campaign needs exactly 2 responses per item (or none, to generate them), got 1"
)


def _pair_rows_with_gaps() -> list[dict[str, Any]]:
    """A null rejected, an empty chosen, a blank rejected; and a row with neither, which
    waits for generation."""
    return [
        {"prompt": "Q1", "chosen": "A1", "rejected": "B1"},
        {"prompt": "Q2", "chosen": "A2", "rejected": None},
        {"prompt": "Q3", "chosen": "", "rejected": "B3"},
        {"prompt": "Q4", "chosen": "A4", "rejected": " \n"},
        {"prompt": "Q5", "chosen": None, "rejected": None},
    ]


def _as_file(kind: str, rows: list[dict[str, Any]]) -> tuple[str, bytes]:
    if kind == "parquet":
        return "pairs.parquet", parquet(pa.Table.from_pylist(rows))
    if kind == "csv":
        cells = [[r["prompt"], r["chosen"] or "", r["rejected"] or ""] for r in rows]
        return "pairs.csv", _csv(["prompt", "chosen", "rejected"], *cells)
    tasks = [{"id": n, "data": row} for n, row in enumerate(rows, start=1)]
    return "export.json", json.dumps(tasks).encode()


@pytest.mark.parametrize("kind", ["parquet", "csv", "label_studio"])
def test_an_empty_response_cell_that_leaves_too_few_responses_is_an_error_of_its_column(
    import_status, kind
):
    name, content = _as_file(kind, _pair_rows_with_gaps())

    status = import_status(name, content)

    assert status["status"] == "failed", status
    where = {"parquet": "row", "csv": "row", "label_studio": "task"}[kind]
    assert [(e[where], e["field"], e["message"]) for e in status["errors"]] == [
        (2, "rejected", f"is empty; {PAIR_COUNT}"),
        (3, "chosen", f"is empty; {PAIR_COUNT}"),
        (4, "rejected", f"holds only whitespace; {PAIR_COUNT}"),
    ]
    assert Item.objects.count() == 0

    status = import_status(name, content, on_error="skip")

    assert (status["status"], status["created"], status["invalid"]) == ("succeeded", 2, 3)
    assert Item.objects.get(prompt="Q1").responses.count() == 2
    assert Item.objects.get(prompt="Q5").responses.count() == 0  # waits for generation


def test_an_empty_response_cell_of_a_row_with_images_is_named_too(import_status, media):
    table = pa.table(
        {
            "image": pa.array([{"bytes": _png("red"), "path": None}], HF_IMAGE),
            "prompt": ["What is shown?"],
            "chosen": ["A red square"],
            "rejected": pa.array([None], pa.string()),
        }
    )

    status = import_status("vision.parquet", parquet(table))

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {"row": 1, "field": "rejected", "message": f"is empty; {PAIR_COUNT}"}
    ]
    assert ItemImage.objects.count() == 0


def test_an_empty_response_cell_of_a_ranking_item_with_enough_responses_is_left_out(
    api_for, engineer, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.feedback.factories import CampaignFactory

    campaign = CampaignFactory(kind="ranking")
    table = pa.table(
        {
            "prompt": ["Q1", "Q2"],
            "response_1": ["a", "a"],
            "response_2": ["b", None],
            "response_3": [None, "   "],
        }
    )
    client = api_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(
            f"/api/v1/campaigns/{campaign.pk}/imports/",
            {
                "file": SimpleUploadedFile("r.parquet", parquet(table), "application/octet-stream"),
                "on_error": "skip",
            },
            format="multipart",
        )
    status = client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    assert (status["created"], status["invalid"]) == (1, 1), status
    assert list(
        Item.objects.get().responses.order_by("position").values_list("text", flat=True)
    ) == ["a", "b"]
    assert [(e["row"], e["field"]) for e in status["errors"]] == [
        (2, "response_2"),
        (2, "response_3"),
    ]
    assert status["errors"][1]["message"] == (
        "holds only whitespace; a ranking campaign needs at least 2 responses per item (or"
        " none, to generate them), got 1"
    )


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
def test_a_mapping_naming_a_column_the_file_lacks_fails_the_import(
    import_status, mapping, field, message
):
    content = _csv(["question", "answer_x", "answer_y", "source"], ["What?", "yes", "no", "web"])

    status = import_status("data.csv", content, mapping=json.dumps(mapping))

    assert status["status"] == "failed"
    assert status["errors"] == [{"field": field, "message": message}]
    assert Item.objects.count() == 0


def test_a_metadata_column_is_merged_with_the_other_columns(import_status):
    content = _csv(
        ["prompt", "chosen", "rejected", "metadata", "source", "difficulty"],
        ["Q1?", "a", "b", json.dumps({"domain": "law"}), "web", "hard"],
        ["Q2?", "a", "b", "", "book", ""],
    )

    status = import_status("pairs.csv", content)

    assert status["status"] == "succeeded", status
    assert Item.objects.get(prompt="Q1?").metadata == {
        "domain": "law",
        "source": "web",
        "difficulty": "hard",
    }
    assert Item.objects.get(prompt="Q2?").metadata == {"source": "book"}


def test_a_key_of_the_metadata_column_that_is_also_a_column_is_an_error_of_the_row(import_status):
    content = _csv(
        ["prompt", "chosen", "rejected", "metadata", "source"],
        ["Q1?", "a", "b", json.dumps({"domain": "law"}), "web"],
        ["Q2?", "a", "b", json.dumps({"source": "book"}), "web"],
    )

    status = import_status("pairs.csv", content)

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


def test_a_csv_response_cell_may_hold_a_chat_or_an_object_with_text(import_status):
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

    status = import_status("pairs.csv", content)

    assert status["status"] == "succeeded", status
    assert sorted(Response.objects.values_list("model_name", "text")) == [
        ("chosen", "4"),
        ("rejected", "5"),
    ]


def test_a_csv_column_without_a_name_is_not_read(import_status):
    # pandas' index (df.to_csv() without index=False) first, a spreadsheet's empty columns
    # after the last: neither is part of the item, nor a metadata key "".
    content = _csv(
        ["", "prompt", "chosen", "rejected", "source", "", ""],
        ["0", "Q1", "yes", "no", "s1", "", ""],
        ["1", "Q2", "yes", "no", "s2", "", ""],
    )

    status = import_status("pandas.csv", content)

    assert status["status"] == "succeeded", status
    assert sorted(Item.objects.values_list("prompt", "metadata")) == [
        ("Q1", {"source": "s1"}),
        ("Q2", {"source": "s2"}),
    ]


def test_a_csv_header_repeating_a_name_is_refused_whatever_columns_have_none(import_status):
    content = _csv(["prompt", "chosen", "rejected", "", "chosen", ""], ["Q", "a", "b", "", "c", ""])

    status = import_status("twice.csv", content)

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"field": "file", "message": "the header repeats the columns ['chosen']"}
    ]


def test_a_csv_chat_written_indented_is_a_chat(import_status):
    # As json.dumps(..., indent=2) or a pretty-printing tool writes it: "[\n  {".
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    answer = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    content = _csv(
        ["prompt", "chosen", "rejected"],
        [json.dumps(chat, indent=2), "[ " + json.dumps(answer, indent=1)[1:], "5"],
    )

    status = import_status("pairs.csv", content)

    assert status["status"] == "succeeded", status
    assert Item.objects.get().prompt == chat
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
def test_a_csv_response_that_is_other_json_stays_as_written(import_status, answer):
    status = import_status(
        "pairs.csv", _csv(["prompt", "chosen", "rejected"], ["Q?", answer, "no"])
    )

    assert status["status"] == "succeeded", status
    assert Response.objects.get(model_name="chosen").text == answer


# --- Label Studio -------------------------------------------------------------------------


def _task(n: int, **data: str) -> dict[str, Any]:
    return {"id": n, "data": {"prompt": f"Q{n}", "chosen": f"A{n}", "rejected": f"B{n}", **data}}


def test_a_task_lacking_a_key_the_mapping_names_is_told_it_is_this_task(import_status):
    """It said "column 'ans2' is not in the file", of a key the other tasks have."""
    tasks = [
        {"id": 1, "data": {"q": "Q1", "ans1": "A", "ans2": "B"}},
        {"id": 2, "data": {"q": "Q2", "ans1": "A"}},
    ]
    mapping = {"prompt": "q", "responses": ["ans1", "ans2"]}

    status = import_status(
        "export.json", json.dumps(tasks).encode(), mapping=json.dumps(mapping), on_error="skip"
    )

    assert status["errors"] == [
        {
            "task": 2,
            "task_id": "2",
            "field": "mapping.responses[1]",
            "message": "column 'ans2' is not in this task's data (its keys are q, ans1)",
        }
    ]
    assert Item.objects.count() == 1


@pytest.mark.parametrize(
    "mapping", [None, {"metadata": []}, {"external_id": "uid"}], ids=["none", "metadata", "id"]
)
def test_a_mapping_naming_no_content_asks_of_every_task_only_the_keys_it_names(
    import_status, mapping
):
    # The first task has a context and a priority; the second has neither, which is read as
    # they are without a mapping: no context, the default priority. Only what the mapping
    # itself names is asked of every task.
    tasks = [
        {"id": 1, "data": {**_task(1)["data"], "context": "ctx", "priority": 3, "uid": "u1"}},
        {"id": 2, "data": {**_task(2)["data"], "uid": "u2"}},
        {"id": 3, "data": _task(3)["data"]},
    ]

    status = import_status(
        "export.json",
        json.dumps(tasks).encode(),
        on_error="skip",
        **({"mapping": json.dumps(mapping)} if mapping else {}),
    )

    stored = {i.prompt: (i.context, i.priority) for i in Item.objects.all()}
    if mapping == {"external_id": "uid"}:
        assert status["errors"] == [
            {
                "task": 3,
                "task_id": "3",
                "field": "mapping.external_id",
                "message": "column 'uid' is not in this task's data (its keys are prompt,"
                " chosen, rejected)",
            }
        ]
        assert stored == {"Q1": ({"text": "ctx"}, 3), "Q2": ({}, 0)}
    else:
        assert status["errors"] == []
        assert stored == {"Q1": ({"text": "ctx"}, 3), "Q2": ({}, 0), "Q3": ({}, 0)}


def test_content_after_the_array_of_tasks_fails_the_import_naming_its_byte(import_status):
    first = json.dumps([_task(1), _task(2)]) + "\n"
    content = (first + json.dumps([_task(3)]) + "\n").encode()

    status = import_status("export.json", content, on_error="skip")

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "byte": len(first),
            "field": "",
            "message": "the file goes on after its array of tasks has closed (after task 2): an"
            " export is one JSON array; send two exports as two imports",
        }
    ]
    assert Item.objects.count() == 0


def test_whitespace_after_the_array_of_tasks_is_fine(import_status):
    content = "\ufeff [ " + json.dumps(_task(1)) + " ,\n" + json.dumps(_task(2)) + " ]\n\n "

    status = import_status("export.json", content.encode())

    assert status["status"] == "succeeded", status
    assert Item.objects.count() == 2


@pytest.mark.parametrize(
    ("content", "task", "message"),
    [
        ("[" + json.dumps(_task(1)) + " " + json.dumps(_task(2)) + "]", 2, "expected ',' or ']'"),
        ("[" + json.dumps(_task(1)) + ",]", 2, "is not valid JSON: Expecting value"),
        ("[" + json.dumps(_task(1)), 2, "the JSON array is not closed"),
        # An export cut short: Python's message alone ends "Unterminated string starting at".
        (
            '[{"id": 1, "data": {"text": "Wh',
            1,
            "is not valid JSON: Unterminated string starting at (character 28 of the task)",
        ),
        (
            '[{"id": 1, "data": {"text": "a\tb"}}]',
            1,
            "is not valid JSON: Invalid control character at (character 30 of the task)",
        ),
    ],
    ids=["no comma", "trailing comma", "not closed", "cut short", "control character"],
)
def test_a_label_studio_array_that_is_not_json_names_the_task(content, task, message):
    rows = read_label_studio(io.BytesIO(content.encode()), None)

    with pytest.raises(UnreadableFile) as caught:
        list(rows)

    assert caught.value.location == {"task": task}
    assert message in caught.value.message


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    def __init__(self, content: bytes):
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n
        return n


def test_a_malformed_label_studio_task_is_reported_without_reading_the_rest():
    tasks = [json.dumps(_task(n, pad="x" * 1000)) for n in range(1, 20_000)]
    tasks[2] = tasks[2][:-1]  # task 3 is not closed: the next task follows its last value
    content = ("[" + ",".join(tasks) + "]").encode()
    source = CountingFile(content)

    with pytest.raises(UnreadableFile) as caught:
        list(read_label_studio(source, None))

    assert caught.value.location == {"task": 3}
    # Where in the task: just after the comma that follows its last value.
    assert caught.value.message == (
        "is not valid JSON: Expecting property name enclosed in double quotes"
        f" (character {len(tasks[2]) + 2} of the task)"
    )
    assert len(content) > 20_000_000
    assert source.bytes_read <= 1 << 20


def test_a_label_studio_task_over_the_limit_is_an_error_of_the_task(monkeypatch):
    monkeypatch.setattr(imports_readers, "LABEL_STUDIO_TASK_MAX_CHARACTERS", 3 << 20)
    big = json.dumps(_task(2, pad="x" * (4 << 20)))
    unclosed = '{"id": 2, "data": {"prompt": "' + "x" * (20 << 20)
    for second in (big, unclosed):
        content = ("[" + json.dumps(_task(1)) + "," + second + "]").encode()
        source = CountingFile(content)

        with pytest.raises(UnreadableFile) as caught:
            list(read_label_studio(source, None))

        assert caught.value.location == {"task": 2}
        assert caught.value.message.startswith(
            "is longer than 3,145,728 characters, the most a task may hold"
        )
        assert source.bytes_read < 5 << 20


def test_a_label_studio_task_just_under_the_limit_is_read(monkeypatch):
    monkeypatch.setattr(imports_readers, "LABEL_STUDIO_TASK_MAX_CHARACTERS", 3 << 20)
    task = json.dumps(_task(1, pad="x" * ((3 << 20) - 200)))
    content = ("[" + task + "," + json.dumps(_task(2)) + "]").encode()
    assert len(task) <= 3 << 20

    rows = list(read_label_studio(io.BytesIO(content), None))

    assert [r.location["task_id"] for r in rows] == ["1", "2"]
    assert rows[0].raw is not None
    assert rows[0].raw["metadata"]["pad"].startswith("xxx")


# --- line and row limits ------------------------------------------------------------------


def test_a_jsonl_line_over_the_limit_stops_the_import_before_it_is_read(monkeypatch, import_status):
    monkeypatch.setattr(imports_readers, "JSONL_LINE_MAX_BYTES", 1000)
    item = {"prompt": "Q", "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}]}
    pad = 1000 - len(json.dumps(item | {"metadata": {"pad": ""}}))
    fits = json.dumps(item | {"metadata": {"pad": "x" * pad}})
    assert len(fits) == 1000  # and its newline makes 1001 bytes: a line may hold 1000
    array = json.dumps([item] * 100)
    content = (fits + "\n" + array + "\n").encode()

    status = import_status("items.jsonl", content, on_error="skip")

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "line": 2,
            "field": "",
            "message": "is longer than 1,000 bytes, the most a line may hold: JSONL has one"
            " item per line (a JSON array is not JSONL)",
        }
    ]
    assert Item.objects.count() == 0


def test_a_long_jsonl_line_is_not_read_past_the_limit(monkeypatch, tmp_path):
    """Through the Django File an import reads, as the job does: iterating it would read the
    whole line (joining its pieces again at every 64 KiB)."""
    monkeypatch.setattr(imports_readers, "JSONL_LINE_MAX_BYTES", 1 << 20)
    raw = CountingFile(b"[" + b'{"prompt": "x"},' * (1 << 20) + b"{}]\n")
    buffered = io.BufferedReader(raw)

    with File(buffered) as binary, pytest.raises(UnreadableFile) as caught:
        list(read_jsonl(binary))

    assert caught.value.location == {"line": 1}
    assert raw.bytes_read < 2 << 20


def test_a_csv_row_over_the_limit_names_its_row_and_first_line(monkeypatch, import_status):
    monkeypatch.setattr(imports_readers, "CSV_ROW_MAX_BYTES", 1000)
    content = _csv(
        ["prompt", "chosen", "rejected"],
        ["Q1?", "a", "b"],
        ["Q2?", "line\n" * 250, "b"],  # one row of 251 lines
        ["Q3?", "a", "b"],
    )

    status = import_status("pairs.csv", content, on_error="skip")

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "row": 2,
            "line": 3,
            "field": "",
            "message": "is longer than 1,000 bytes, the most a row may hold",
        }
    ]
    assert Item.objects.count() == 0


def test_a_csv_row_at_the_limit_is_read(monkeypatch, import_status):
    monkeypatch.setattr(imports_readers, "CSV_ROW_MAX_BYTES", 1000)
    row = ["Q?", "x" * (1000 - len(_csv(["Q?", "", "b"]))), "b"]
    assert len(_csv(row)) == 1000  # with its commas and CRLF

    status = import_status("pairs.csv", _csv(["prompt", "chosen", "rejected"], row))

    assert status["status"] == "succeeded", status
    assert Response.objects.get(model_name="chosen").text == row[1]


# --- a context of text -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_context_column_of_text_is_the_items_context_as_text(import_status, kind):
    """Dolly-shaped data (`instruction`, `context`: a reference passage, a response): every row
    failed "context: must be an object". The passage is the item's context, shown to the
    expert; a blank one is none, and a CSV cell starting with { is still read as JSON."""
    rows = [
        {
            "instruction": "When was it built?",
            "context": "The bridge opened in 1932.",
            "response_a": "1932",
            "response_b": "1930",
            "category": "closed_qa",
        },
        {
            "instruction": "Name a colour.",
            "context": "",
            "response_a": "Red",
            "response_b": "Blue",
            "category": "open_qa",
        },
        {
            "instruction": "Which repo?",
            "context": '{"repo": "acme/api"}',
            "response_a": "api",
            "response_b": "web",
            "category": "closed_qa",
        },
    ]
    if kind == "parquet":
        rows[2]["context"] = ""  # a Parquet context object is a struct column, not text
        content = parquet(pa.Table.from_pylist(rows))
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        content = out.getvalue().encode()

    status = import_status(f"dolly.{kind}", content)

    assert status["status"] == "succeeded", status
    built = Item.objects.get(prompt="When was it built?")
    assert built.context == {"text": "The bridge opened in 1932."}
    assert built.metadata == {"category": "closed_qa"}
    assert Item.objects.get(prompt="Name a colour.").context == {}
    if kind == "csv":
        assert Item.objects.get(prompt="Which repo?").context == {"repo": "acme/api"}


def test_a_csv_context_cell_of_json_is_read_as_json_and_any_other_text_as_text(import_status):
    """`null` is no context, as before; JSON that is not an object is refused as before (not
    taken as text); a string in Parquet is text whatever it starts with."""
    rows = 'prompt,answer_a,answer_b,context\nQ1,A,B,null\nQ2,A,B,"[1, 2]"\n'
    status = import_status("ctx.csv", rows.encode(), on_error="skip")
    assert [(e["row"], e["field"]) for e in status["errors"]] == [(2, "context")]
    assert Item.objects.get(prompt="Q1").context == {}

    table = pa.Table.from_pylist(
        [{"prompt": "Q3", "answer_a": "A", "answer_b": "B", "context": "{x} is a set"}]
    )
    status = import_status("ctx.parquet", parquet(table))
    assert status["status"] == "succeeded", status
    assert Item.objects.get(prompt="Q3").context == {"text": "{x} is a set"}


# --- Parquet rows over the limit -----------------------------------------------------------


def _preference_parquet(prompts: list[str], *, row_group_size: int | None = None) -> io.BytesIO:
    import pyarrow.parquet as pq

    table = pa.table(
        {"prompt": prompts, "chosen": ["yes"] * len(prompts), "rejected": ["no"] * len(prompts)}
    )
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", row_group_size=row_group_size)
    out.seek(0)
    return out


def test_a_parquet_row_group_of_rows_over_the_limit_is_refused_before_it_is_read():
    # 65 MiB of one letter compresses to a few KB: the file is small, the row is not.
    source = _preference_parquet(["a" * (65 << 20)])
    assert len(source.getvalue()) < 100_000

    with pytest.raises(UnreadableFile) as caught:
        list(imports_readers.read_parquet(source, None))

    assert caught.value.location == {"row": 1, "row_group": 0}
    assert caught.value.message.startswith("holds rows of 68,157,")
    assert caught.value.message.endswith(
        "bytes on average, uncompressed: more than the 67,108,864 bytes a row may hold"
    )


def test_a_parquet_row_over_the_limit_among_small_ones_is_named(monkeypatch):
    # The row group's rows average under the limit, so it is read; the long row is refused
    # when its batch comes, before any of the batch is made Python values.
    monkeypatch.setattr(imports_readers, "PARQUET_ROW_MAX_BYTES", 1 << 20)
    prompts = ["short"] * 7 + ["a" * (3 << 20)] + ["short"] * 8

    with pytest.raises(UnreadableFile) as caught:
        list(imports_readers.read_parquet(_preference_parquet(prompts), None))

    assert caught.value.location == {"row": 8, "row_group": 0}
    assert caught.value.message.startswith("is 3,145,")
    assert caught.value.message.endswith(
        "bytes uncompressed: more than the 1,048,576 bytes a row may hold"
    )
