"""Values the item format allows in JSON but PostgreSQL or the item model cannot take, and
values that only look like them: through the batch endpoint and every import format."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa
import pytest

from feedback.item_input import MAX_NESTING, NOT_FINITE_MESSAGE, NUL_MESSAGE, TOO_DEEP_MESSAGE
from feedback.models import Item
from tests.feedback.import_files import item_object, parquet

pytestmark = pytest.mark.django_db

# Text about string escapes (a code diff, a JSON tutorial): six characters, no NUL.
MENTIONS_NUL = 'In JSON the NUL character is written "\\u0000"; null is a value.'


def _nested(levels: int) -> Any:
    """`levels` lists and objects inside one another, alternately, around a number."""
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.fixture
def post_items(api_for, engineer, pairwise_campaign):
    """POST JSON text as written to the batch endpoint, or as the multipart `items` field."""
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"

    def send(body: str, *, multipart: bool = False) -> Any:
        if multipart:
            return client.post(url, {"items": body}, format="multipart")
        return client.generic("POST", url, body.encode(), content_type="application/json")

    return send


# --- text that mentions \u0000 or null ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", MENTIONS_NUL),
        ("context", {"diff": MENTIONS_NUL, "base": None}),
        ("metadata", {"note": MENTIONS_NUL, "score": None}),
    ],
)
def test_text_that_mentions_the_nul_escape_or_null_is_imported_as_it_is(
    import_status, pairwise_campaign, field, value
):
    status = import_status(
        "items.jsonl", json.dumps(item_object(1, **{field: value})).encode() + b"\n"
    )

    assert status["status"] == "succeeded", status
    assert getattr(Item.objects.get(campaign=pairwise_campaign), field) == value


@pytest.mark.parametrize("field", ["prompt", "context", "metadata"])
def test_a_real_nul_beside_text_that_mentions_one_is_still_an_error_of_its_field(
    import_status, field
):
    value = {
        "prompt": MENTIONS_NUL + "\x00",
        "context": {"diff": MENTIONS_NUL, "x": "a\x00"},
        "metadata": {"note": MENTIONS_NUL, "x\x00": 1},
    }[field]
    status = import_status(
        "items.jsonl", json.dumps(item_object(1, **{field: value})).encode() + b"\n"
    )

    assert status["status"] == "failed"
    assert status["errors"] == [{"line": 1, "field": field, "message": NUL_MESSAGE}]
    assert Item.objects.count() == 0


# --- NaN and infinite numbers --------------------------------------------------------------------


@pytest.mark.parametrize("multipart", [False, True])
@pytest.mark.parametrize(
    ("item", "field"),
    [
        ('{"prompt": "Q", "metadata": {"score": 1e400}}', "metadata"),
        ('{"prompt": "Q", "context": {"s": [1, -1e400]}}', "context"),
    ],
)
def test_a_number_beyond_a_double_is_a_400_naming_its_field(post_items, multipart, item, field):
    """Python's JSON parser reads 1e400 as infinity, which jsonb cannot store."""
    res = post_items(f'[{{"prompt": "fine"}}, {item}]', multipart=multipart)

    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {f"items[1].{field}": [NOT_FINITE_MESSAGE]}
    assert Item.objects.count() == 0


def test_nan_in_the_multipart_items_field_is_a_400_naming_its_field(post_items):
    res = post_items(
        '[{"prompt": "Q", "metadata": {"score": NaN, "low": -Infinity}}]', multipart=True
    )

    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {"items[0].metadata": [NOT_FINITE_MESSAGE]}
    assert Item.objects.count() == 0


def test_nan_in_a_json_body_is_a_400(post_items):
    res = post_items('[{"prompt": "Q", "metadata": {"score": NaN}}]')

    assert res.status_code == 400, res.content
    assert "NaN" in res.json()["error"]["message"]
    assert Item.objects.count() == 0


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"NaN", b"Infinity"])
def test_a_jsonl_line_with_a_number_json_cannot_store_is_an_error_of_its_line(
    import_status, number
):
    line = b'{"prompt": "Q", "metadata": {"score": %b}}\n' % number
    status = import_status("items.jsonl", json.dumps(item_object(1)).encode() + b"\n" + line)

    assert status["status"] == "failed"
    [error] = status["errors"]
    assert (error["line"], error["field"]) == (2, "")
    assert error["message"].startswith("is not valid JSON")
    assert Item.objects.count() == 0


def test_a_csv_json_cell_with_a_number_beyond_a_double_names_the_row_and_field(import_status):
    csv_text = (
        "external_id,prompt,context,response_1,response_2\n"
        'n-1,Question,"{""score"": 1}",A,B\n'
        'n-2,Question 2,"{""score"": 1e400}",A,B\n'
    )
    status = import_status("items.csv", csv_text.encode())

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"row": 2, "line": 3, "field": "context", "message": NOT_FINITE_MESSAGE}
    ]
    assert Item.objects.count() == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_label_studio_task_with_a_number_json_cannot_store_names_the_task(import_status, number):
    export = (
        '[{"id": 1, "data": {"prompt": "a", "answer1": "x", "answer2": "y"}},'
        ' {"id": 2, "data": {"prompt": "b", "answer1": "x", "answer2": "y", "score": '
        + number
        + "}}]"
    )
    status = import_status("export.json", export.encode())

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"task": 2, "task_id": "2", "field": "metadata", "message": NOT_FINITE_MESSAGE}
    ]
    assert Item.objects.count() == 0


def test_parquet_nan_and_infinity_are_errors_of_their_row_and_field_not_nulls(import_status):
    table = pa.table(
        {
            "prompt": ["q1", "q2", "q3"],
            "chosen": ["a1", "a2", "a3"],
            "rejected": ["b1", "b2", "b3"],
            "score": [0.5, float("nan"), float("-inf")],
        }
    )
    status = import_status("items.parquet", parquet(table))

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"row": 2, "field": "metadata", "message": NOT_FINITE_MESSAGE},
        {"row": 3, "field": "metadata", "message": NOT_FINITE_MESSAGE},
    ]
    assert Item.objects.count() == 0

    status = import_status("items.parquet", parquet(table), on_error="skip")
    assert (status["status"], status["created"], status["invalid"]) == ("succeeded", 1, 2)
    assert Item.objects.get().metadata == {"score": 0.5}


def test_nan_beside_the_role_and_content_of_a_message_is_an_error_of_the_prompt(import_status):
    messages = pa.array(
        [
            [{"role": "user", "content": "q1", "weight": 1.0}],
            [{"role": "user", "content": "q2", "weight": float("nan")}],
        ]
    )
    table = pa.table({"prompt": messages, "chosen": ["a1", "a2"], "rejected": ["b1", "b2"]})
    status = import_status("items.parquet", parquet(table), on_error="skip")

    assert status["status"] == "succeeded"
    assert status["errors"] == [{"row": 2, "field": "prompt", "message": NOT_FINITE_MESSAGE}]
    assert Item.objects.get().prompt == [{"role": "user", "content": "q1", "weight": 1.0}]


# --- nesting -------------------------------------------------------------------------------------


def test_the_import_leaves_no_value_nested_too_deeply_to_orjson_alone():
    """The import's quick path hands a value to the exact check when orjson refuses it, so
    orjson must refuse everything nested deeper than MAX_NESTING."""
    orjson.dumps(_nested(254))
    with pytest.raises(TypeError):
        orjson.dumps(_nested(MAX_NESTING + 1))


@pytest.mark.parametrize("field", ["context", "metadata"])
def test_an_item_may_nest_max_nesting_levels_in_a_field_and_no_more(post_items, field):
    deep = json.dumps(item_object(1, **{field: {"x": _nested(MAX_NESTING - 1)}}))
    too_deep = json.dumps(item_object(2, **{field: {"x": _nested(MAX_NESTING)}}))

    res = post_items(f"[{too_deep}]")
    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {f"items[0].{field}": [TOO_DEEP_MESSAGE]}

    res = post_items(f"[{deep}]")
    assert res.status_code == 201, res.content
    assert getattr(Item.objects.get(), field) == {"x": _nested(MAX_NESTING - 1)}


@pytest.mark.parametrize(
    "levels",
    [
        MAX_NESTING - 1,  # orjson writes it: the quick path
        MAX_NESTING + 1,  # orjson refuses it: the exact check
        600,  # beyond orjson's writing, within its reading
    ],
)
def test_a_jsonl_item_nested_too_deeply_is_an_error_of_its_line_and_field(import_status, levels):
    good = {"x": _nested(MAX_NESTING - 1)}
    lines = [
        json.dumps(item_object(1, metadata=good)),
        json.dumps(item_object(2, context={"x": _nested(levels)})),
    ]
    status = import_status("items.jsonl", "\n".join(lines).encode() + b"\n", on_error="skip")

    assert status["status"] == "succeeded"
    assert Item.objects.get(external_id="q-1").metadata == good
    if levels < MAX_NESTING:
        assert (status["created"], status["errors"]) == (2, [])
    else:
        assert status["errors"] == [{"line": 2, "field": "context", "message": TOO_DEEP_MESSAGE}]


DEEPER_THAN_PYTHON_READS = 100_000


def test_items_nested_deeper_than_python_reads_are_a_400(post_items):
    deep = "[" * DEEPER_THAN_PYTHON_READS + "]" * DEEPER_THAN_PYTHON_READS
    items = f'[{{"prompt": "q", "metadata": {{"x": {deep}}}}}]'

    as_body = post_items(items)
    as_field = post_items(items, multipart=True)  # the items field, read by the endpoint

    assert as_body.status_code == 400, as_body.content
    assert as_body.json()["error"]["code"] == "parse_error"
    assert "nested too deeply to be read" in as_body.json()["error"]["message"]
    assert as_field.status_code == 400, as_field.content
    assert as_field.json()["error"]["fields"] == {"items": ["nested too deeply to be read"]}


def test_any_json_body_nested_deeper_than_python_reads_is_a_400(api_for, engineer):
    deep = "[" * DEEPER_THAN_PYTHON_READS + "]" * DEEPER_THAN_PYTHON_READS

    res = api_for(engineer).post(
        "/api/v1/campaigns/", data=f'{{"name": {deep}}}', content_type="application/json"
    )

    assert res.status_code == 400, res.content
    assert "nested too deeply to be read" in res.json()["error"]["message"]
    assert Item.objects.count() == 0


def test_a_label_studio_task_nested_deeper_than_python_reads_names_the_task(import_status):
    deep = "[" * DEEPER_THAN_PYTHON_READS + "]" * DEEPER_THAN_PYTHON_READS
    export = (
        '[{"id": 1, "data": {"prompt": "a", "answer1": "x", "answer2": "y"}},'
        ' {"id": 2, "data": {"prompt": "b", "answer1": "x", "answer2": "y", "x": ' + deep + "}}]"
    )
    status = import_status("export.json", export.encode(), on_error="skip")

    assert status["status"] == "failed"
    assert [(e["task"], e["field"]) for e in status["errors"]] == [(2, "")]
    assert "nested too deeply to be read" in status["errors"][0]["message"]
    assert "task 2" in status["message"]
    assert Item.objects.count() == 0


def test_a_csv_cell_nested_deeper_than_python_reads_names_the_row(import_status):
    deep = "[" * DEEPER_THAN_PYTHON_READS + "]" * DEEPER_THAN_PYTHON_READS
    csv_text = (
        "external_id,prompt,context,response_1,response_2\n"
        'n-1,Question,"{""score"": 1}",A,B\n'
        f'n-2,Question 2,"{{""x"": {deep}}}",A,B\n'
    )
    status = import_status("items.csv", csv_text.encode())

    assert status["status"] == "failed"
    assert [(e["row"], e["field"]) for e in status["errors"]] == [(2, "")]
    assert Item.objects.count() == 0


# --- integers written as floats ------------------------------------------------------------------


def test_parquet_integer_columns_with_missing_values_import_as_integers(import_status):
    """pandas writes an integer column with a missing value as float64: 3.0, NaN."""
    table = pa.table(
        {
            "external_id": [17.0, None],
            "prompt": ["q1", "q2"],
            "chosen": ["a1", "a2"],
            "rejected": ["b1", "b2"],
            "priority": [3.0, None],
        }
    )
    status = import_status("items.parquet", parquet(table))

    assert status["status"] == "succeeded", status
    stored = Item.objects.order_by("prompt").values_list("prompt", "external_id", "priority")
    assert list(stored) == [("q1", "17", 3), ("q2", None, 0)]


def test_an_integral_float_is_that_integer_in_the_batch_too(post_items):
    res = post_items('[{"prompt": "Q", "priority": 3.0, "external_id": 1e3}]')

    assert res.status_code == 201, res.content
    item = Item.objects.get()
    assert (item.external_id, item.priority, item.queue.priority) == ("1000", 3, 3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", 3.5, "must be an integer from -1000 to 1000, got 3.5"),
        ("priority", "3", "must be an integer from -1000 to 1000, got '3'"),
        ("priority", 2000.0, "must be an integer from -1000 to 1000, got 2000"),
        ("external_id", 17.5, "must be a non-empty string or an integer, got 17.5"),
        ("external_id", True, "must be a non-empty string or an integer, got true"),
        # orjson reads an integer beyond 64 bits as a float, which another integer could be.
        (
            "external_id",
            123456789012345678901234567890,
            "must be a non-empty string or an integer, got 1.2345678901234568e+29",
        ),
    ],
)
def test_a_number_that_is_not_an_integer_is_refused_saying_what_it_got(
    import_status, field, value, message
):
    status = import_status(
        "items.jsonl", json.dumps(item_object(1, **{field: value})).encode() + b"\n"
    )

    assert status["status"] == "failed"
    assert status["errors"] == [{"line": 1, "field": field, "message": message}]


HUGE_INTEGER = "9" * 5_000  # more digits than Python converts to an int by default


def test_an_integer_too_long_to_read_in_the_items_field_is_a_400(post_items):
    res = post_items(f'[{{"prompt": "q", "priority": {HUGE_INTEGER}}}]', multipart=True)

    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {"items": ["not readable JSON"]}
    assert Item.objects.count() == 0


def test_an_integer_too_long_to_read_in_a_label_studio_task_names_the_task(import_status):
    export = (
        '[{"id": 1, "data": {"prompt": "a", "answer1": "x", "answer2": "y"}},'
        ' {"id": 2, "data": {"prompt": "b", "answer1": "x", "answer2": "y", "n": '
        + HUGE_INTEGER
        + "}}]"
    )
    status = import_status("export.json", export.encode(), on_error="skip")

    assert status["status"] == "failed"
    assert [(e["task"], e["field"]) for e in status["errors"]] == [(2, "")]
    assert "could not be read" in status["errors"][0]["message"]
    assert Item.objects.count() == 0
