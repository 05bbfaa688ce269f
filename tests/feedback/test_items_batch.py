from __future__ import annotations

import pytest

from feedback.imports import stored_by_external_id, stored_by_hash
from feedback.models import Item, QueueEntry, Response
from tests.db_stats import moved_past_the_statistics, rows_read
from tests.feedback.factories import CampaignFactory
from tests.feedback.intake_lock import intake_held_elsewhere

pytestmark = pytest.mark.django_db

GOOD = {
    "external_id": "pr-1",
    "prompt": [{"role": "user", "content": "Review this diff"}],
    "context": {"kind": "code_pr", "diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"},
    "responses": [
        {"model": "m-a", "text": "Looks fine"},
        {"model": "m-b", "text": "Bug on line 1"},
    ],
    "metadata": {"domain": "code"},
}


def test_it_stores_a_valid_batch_with_its_responses(api_for, engineer, pairwise_campaign):
    second = {**GOOD, "external_id": "pr-2", "prompt": "plain string prompt"}
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD, second], format="json"
    )
    assert res.status_code == 201, res.json()
    assert res.json()["created"] == 2
    assert Item.objects.filter(campaign=pairwise_campaign).count() == 2
    assert Response.objects.filter(item__campaign=pairwise_campaign).count() == 4
    item = Item.objects.get(external_id="pr-1")
    assert item.queue.open_slots == pairwise_campaign.overlap


def test_it_rejects_the_whole_batch_and_names_each_bad_index_and_field(
    api_for, engineer, pairwise_campaign
):
    bad_prompt = {**GOOD, "external_id": "x1", "prompt": ""}
    bad_text = {
        **GOOD,
        "external_id": "x2",
        "responses": [{"model": "m", "text": 7}, {"model": "n", "text": "ok"}],
    }
    missing_prompt = {"external_id": "x3", "responses": []}
    body = [GOOD, bad_prompt, GOOD | {"external_id": "ok-2"}, bad_text, missing_prompt]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", body, format="json"
    )
    assert res.status_code == 400
    error = res.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {
        "items[1].prompt",
        "items[3].responses[0].text",
        "items[4].prompt",
    }
    assert "index 1, 3, 4" in error["message"]
    assert Item.objects.count() == 0
    assert Response.objects.count() == 0


def test_it_checks_the_response_count_against_the_campaign_kind(
    api_for, engineer, pairwise_campaign
):
    three = {**GOOD, "responses": [{"model": str(i), "text": "t"} for i in range(3)]}
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [three], format="json"
    )
    assert res.status_code == 400
    assert "exactly 2" in res.json()["error"]["fields"]["items[0].responses"][0]


def test_an_empty_or_blank_response_text_is_an_error_of_its_field(
    api_for, engineer, pairwise_campaign
):
    blank = {
        "prompt": "p3",
        "responses": [{"model": "a", "text": ""}, {"model": "b", "text": "   "}],
    }
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD, blank], format="json"
    )

    assert res.status_code == 400, res.json()
    assert res.json()["error"]["fields"] == {
        "items[1].responses[0].text": ["must not be empty"],
        "items[1].responses[1].text": ["must not be empty"],
    }
    assert Item.objects.count() == 0


def test_it_reports_and_skips_duplicates(api_for, engineer, pairwise_campaign):
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    assert client.post(url, [GOOD], format="json").status_code == 201
    res = client.post(url, [GOOD, {**GOOD, "external_id": "pr-9"}], format="json")
    assert res.status_code == 201
    body = res.json()
    assert body["created"] == 0
    assert [d["index"] for d in body["duplicates"]] == [0, 1]
    assert Item.objects.count() == 1


def test_an_item_without_responses_waits_outside_the_queue(api_for, engineer, pairwise_campaign):
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [{"prompt": "generate me"}],
        format="json",
    )
    assert res.status_code == 201
    assert QueueEntry.objects.get().open_slots == 0


def test_an_expert_cannot_push_items(api_for, expert, pairwise_campaign):
    res = api_for(expert).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD], format="json"
    )
    assert res.status_code == 403
    assert Item.objects.count() == 0


def test_an_unknown_campaign_is_404(api_for, engineer):
    res = api_for(engineer).post("/api/v1/campaigns/999999/items/", [GOOD], format="json")
    assert res.status_code == 404
    assert res.json()["error"]["code"] == "not_found"


def test_a_body_that_is_not_a_list_is_a_clear_error(api_for, engineer, pairwise_campaign):
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", {"prompt": "x"}, format="json"
    )
    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"items": ["must be a list"]}


def test_one_external_id_on_two_different_items_is_refused(api_for, engineer, pairwise_campaign):
    other = {**GOOD, "prompt": "A different question"}
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD, other], format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[1].external_id": ["'pr-1' is also the id of items[0], with other content"]
    }
    assert Item.objects.count() == 0


def test_one_external_id_on_two_different_items_is_refused_when_the_first_is_a_duplicate(
    api_for, engineer, pairwise_campaign
):
    # The first item is skipped as a copy of a stored one's content; its id still names it,
    # so a later item with that id and other content is the same conflict as above.
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    client = api_for(engineer)
    assert client.post(url, [GOOD], format="json").status_code == 201
    copy = {**GOOD, "external_id": "x"}
    other = {**GOOD, "external_id": "x", "prompt": "A different question"}

    res = client.post(url, [copy, other], format="json")

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[1].external_id": ["'x' is also the id of items[0], with other content"]
    }
    assert Item.objects.count() == 1


def test_a_batch_with_an_invalid_item_names_the_id_conflicts_too(
    api_for, engineer, pairwise_campaign
):
    """The conflict was found only once the invalid item was mended: two answers for one
    batch's mistakes."""
    other = {**GOOD, "prompt": "A different question"}
    no_prompt = {k: v for k, v in GOOD.items() if k != "prompt"} | {"external_id": "pr-3"}

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD, other, no_prompt], format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[1].external_id": ["'pr-1' is also the id of items[0], with other content"],
        "items[2].prompt": ["is required"],
    }
    assert "2 of 3 items are invalid (index 1, 2)" in res.json()["error"]["message"]
    assert Item.objects.count() == 0


def test_repeats_within_a_batch_name_the_item_they_repeat(api_for, engineer, pairwise_campaign):
    no_id = {k: v for k, v in GOOD.items() if k != "external_id"}
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD, GOOD, no_id], format="json"
    )

    assert res.status_code == 201, res.json()
    assert res.json()["duplicates"] == [
        {
            "index": 1,
            "external_id": "pr-1",
            "reason": "external_id 'pr-1' appears earlier in this batch (items[0])",
        },
        {
            "index": 2,
            "external_id": None,
            "reason": "the same prompt, context and responses appear earlier in this batch"
            " (items[0])",
        },
    ]
    assert Item.objects.count() == 1


def test_response_ids_do_not_give_away_the_order_the_responses_came_in(
    api_for, engineer, pairwise_campaign
):
    # Experts see response ids; stored in the source's order, the lower id would always be
    # the model listed first. Each item's responses are stored in a random order instead.
    batch = [
        {
            "external_id": f"o-{n}",
            "prompt": f"Question {n}?",
            "responses": [{"model": "first", "text": f"F{n}"}, {"model": "second", "text": "S"}],
        }
        for n in range(40)
    ]
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", batch, format="json"
    )
    assert res.status_code == 201, res.json()

    first_has_lower_id = []
    for item in Item.objects.filter(campaign=pairwise_campaign):
        first, second = item.responses.order_by("position")
        assert (first.model_name, first.text, second.model_name) == (
            "first",
            f"F{item.external_id[2:]}",
            "second",
        )
        first_has_lower_id.append(first.pk < second.pk)
    # Both orders occur (all 40 alike by chance: 2 in 2^40).
    assert set(first_has_lower_id) == {True, False}


def _post_json_text(client, campaign, body: str):
    """POST JSON text as written: escapes such as an unpaired \\ud800 reach the server's
    parser, which the test client's own encoding of Python objects would refuse."""
    return client.generic(
        "POST",
        f"/api/v1/campaigns/{campaign.pk}/items/",
        body.encode(),
        content_type="application/json",
    )


def test_one_answer_names_every_bad_field_of_an_item(api_for, engineer, pairwise_campaign):
    """A bad priority does not hide the wrong number of responses, nor a NUL in a text: the
    400 names every field at once, so one fix makes the item good."""
    body = (
        '[{"prompt": "q\\u0000", "priority": 5000, "is_gold": "yes",'
        ' "responses": [{"model": "m-a", "text": "A\\u0000"}]},'
        ' {"prompt": "fine", "responses": [{"model": "m-a", "text": "A"}, 7]}]'
    )
    res = _post_json_text(api_for(engineer), pairwise_campaign, body)
    assert res.status_code == 400, res.content
    nul = "contains a NUL character (\\u0000), which cannot be stored"
    assert res.json()["error"]["fields"] == {
        "items[0].prompt": [nul],
        "items[0].priority": ["must be an integer from -1000 to 1000, got 5000"],
        "items[0].is_gold": ["must be true or false"],
        "items[0].responses": [
            "a pairwise campaign needs exactly 2 responses per item (or none, to generate"
            " them), got 1"
        ],
        "items[0].responses[0].text": [nul],
        "items[1].responses[1]": ["must be an object with model and text"],
    }
    assert not Item.objects.exists()


@pytest.mark.parametrize(
    ("escape", "message"),
    [
        ("\\u0000", "contains a NUL character (\\u0000), which cannot be stored"),
        (
            "\\ud800",
            "contains a lone UTF-16 surrogate (an unpaired \\ud800 escape), which is not a"
            " character and cannot be stored",
        ),
    ],
)
def test_what_postgresql_cannot_store_is_an_error_naming_each_field(
    api_for, engineer, pairwise_campaign, escape, message
):
    """Python's JSON parser lets a NUL and a lone surrogate through; both are a 400 naming
    every field that holds one, and nothing is stored (not a failed save)."""
    body = (
        '[{"prompt": "a' + escape + 'b", "external_id": "x' + escape + '",'
        ' "context": {"k' + escape + '": 1}, "metadata": {"m": ["ok", "n' + escape + '"]},'
        ' "responses": [{"model": "m-a", "text": "A' + escape + '"},'
        ' {"model": "m' + escape + '", "text": "B"}]}]'
    )
    res = _post_json_text(api_for(engineer), pairwise_campaign, body)
    assert res.status_code == 400, res.content
    fields = res.json()["error"]["fields"]
    assert fields == {
        f"items[0].{name}": [message]
        for name in (
            "prompt",
            "external_id",
            "context",
            "metadata",
            "responses[0].text",
            "responses[1].model",
        )
    }
    assert not Item.objects.exists()


def test_an_unknown_key_holding_a_lone_surrogate_is_named_with_u_fffd(
    api_for, engineer, pairwise_campaign
):
    body = (
        '[{"prompt": "p", "\\ud800": 1, "responses": [{"model": "m-a", "text": "A", "k\\ud800": 1},'
        ' {"model": "m-b", "text": "B"}]}]'
    )
    res = _post_json_text(api_for(engineer), pairwise_campaign, body)
    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {
        "items[0].\ufffd": ["is not a field of an item"],
        "items[0].responses[0].k\ufffd": ["is not a field of a response"],
    }


def test_a_batch_sent_while_an_import_writes_into_the_campaign_is_refused_not_held(
    api_for, engineer, pairwise_campaign, settings
):
    """A running import holds the campaign's intake lock for as long as it runs (minutes for a
    large file). A batch does not wait that long, which would outlast the web worker's timeout
    (gunicorn kills it: a 500 with nothing said): it waits INTAKE_LOCK_WAIT_SECONDS, then is
    refused with a 409 naming the import. A second PostgreSQL session plays the import."""
    from feedback.models import ImportJob

    settings.INTAKE_LOCK_WAIT_SECONDS = 1
    running = ImportJob.objects.create(
        campaign=pairwise_campaign, created_by=engineer, format="jsonl", status="running"
    )
    with intake_held_elsewhere(pairwise_campaign.pk) as import_runs:
        res = api_for(engineer).post(
            f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [GOOD], format="json"
        )
        assert import_runs.is_alive(), "the batch waited for the import to end"
    assert res.status_code == 409, res.json()
    error = res.json()["error"]
    assert error["code"] == "intake_busy"
    assert f"Import {running.pk} " in error["message"]
    assert f"imports/{running.pk}/" in error["message"]
    assert not Item.objects.filter(campaign=pairwise_campaign).exists()


def test_the_same_content_with_other_line_breaks_or_17_for_17_0_is_a_duplicate(
    api_for, engineer, pairwise_campaign
):
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    client = api_for(engineer)
    first = {
        "prompt": "Line one\nline two",
        "context": {"clause": 17, "rate": 0.5},
        "responses": [{"model": "a", "text": "A1\nA2"}, {"model": "b", "text": "B"}],
    }
    assert client.post(url, [first], format="json").status_code == 201
    crlf = {**first, "prompt": "Line one\r\nline two"}
    lone_cr = {
        **first,
        "responses": [{"model": "a", "text": "A1\rA2"}, {"model": "b", "text": "B"}],
    }
    a_float = {**first, "context": {"clause": 17.0, "rate": 0.5}}
    other_number = {**first, "context": {"clause": 17.5, "rate": 0.5}}

    res = client.post(url, [crlf, lone_cr, a_float, other_number], format="json")

    assert res.status_code == 201, res.json()
    body = res.json()
    assert [d["index"] for d in body["duplicates"]] == [0, 1, 2]
    assert body["created"] == 1
    # Each stored as it was sent: only the duplicate check reads them alike.
    assert Item.objects.latest("pk").context == {"clause": 17.5, "rate": 0.5}
    assert Item.objects.filter(prompt="Line one\nline two").count() == 2


@pytest.mark.parametrize(
    "emptied",
    [
        {**GOOD, "context": {**GOOD["context"], "images": []}},
        {**GOOD, "prompt": [{**GOOD["prompt"][0], "images": []}]},
        {**GOOD, "responses": [{**GOOD["responses"][0], "images": []}, GOOD["responses"][1]]},
    ],
    ids=["context", "prompt message", "response"],
)
@pytest.mark.parametrize("first", ["emptied", "plain"])
def test_an_empty_images_list_is_the_same_item_as_none(
    api_for, engineer, pairwise_campaign, emptied, first
):
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    one, other = (emptied, GOOD) if first == "emptied" else (GOOD, emptied)

    assert client.post(url, [one], format="json").json()["created"] == 1
    again = client.post(url, [other], format="json")

    assert again.status_code == 201, again.json()
    assert (again.json()["created"], len(again.json()["duplicates"])) == (0, 1)
    item = Item.objects.get(campaign=pairwise_campaign)
    # Stored as without the key.
    assert (item.prompt, item.context) == (GOOD["prompt"], GOOD["context"])


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("items=%5B%5D", "application/x-www-form-urlencoded"), ("[]", "text/plain")],
    ids=["form", "text"],
)
def test_a_batch_that_is_not_json_is_a_415(
    api_for, engineer, pairwise_campaign, body, content_type
):
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", body, content_type=content_type
    )

    assert res.status_code == 415, res.json()
    assert res.json()["error"]["code"] == "unsupported_media_type"
    assert Item.objects.count() == 0


def test_a_refused_image_does_not_hide_the_items_other_errors(api_for, engineer, pairwise_campaign):
    bad = {
        **GOOD,
        "context": {"images": ["data:image/png;base64,@@@"]},
        "responses": [{"model": "a", "text": ""}, {"model": "b", "text": "x"}],
        "priority": 5000,
    }

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [bad], format="json"
    )

    assert res.status_code == 400
    assert set(res.json()["error"]["fields"]) == {
        "items[0].context.images[0]",
        "items[0].responses[0].text",
        "items[0].priority",
    }
    assert Item.objects.count() == 0


def test_an_uploaded_image_named_outside_a_list_is_an_error_of_its_item(
    api_for, engineer, pairwise_campaign
):
    import json

    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.feedback.pictures import png

    item = {**GOOD, "context": {"images": "upload:a.png"}}
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        {"items": json.dumps([item]), "images": SimpleUploadedFile("a.png", png())},
        format="multipart",
    )

    assert res.status_code == 400
    fields = res.json()["error"]["fields"]
    assert list(fields) == ["items[0].context.images"], fields
    assert fields["items[0].context.images"][0].startswith("must be a list of images")
    assert Item.objects.count() == 0


def _items_of_a_campaign_the_statistics_predate(engineer, count: int):
    """`count` items stored in a campaign made after the items table was last analyzed."""
    older = CampaignFactory(kind="pairwise", created_by=engineer)
    Item.objects.bulk_create(
        Item(
            campaign=older,
            external_id=f"stored-{n}",
            prompt=f"Stored question {n}?",
            content_hash=f"{n:064x}",
        )
        for n in range(count)
    )
    campaign = CampaignFactory(kind="pairwise", created_by=engineer)
    moved_past_the_statistics(Item.objects.filter(campaign=older), campaign)
    return campaign


def test_the_duplicate_check_reads_only_the_keys_in_a_campaign_newer_than_the_statistics(
    engineer,
):
    """A campaign newer than the items table's statistics looks empty to the planner, as a new
    campaign does while its items are pushed: the duplicate check of each batch reads the
    stored items with the batch's content hashes and external_ids, not every item of the
    campaign."""
    campaign = _items_of_a_campaign_the_statistics_predate(engineer, 20_000)
    hashes = [f"{n:064x}" for n in (7, 8)] + [f"{n:064x}" for n in range(10**6, 10**6 + 10)]
    ext_ids = ["stored-7", "stored-8"] + [f"new-{n}" for n in range(10)]

    before = rows_read("feedback_item")
    by_hash = stored_by_hash(campaign.pk, hashes)
    by_external_id = stored_by_external_id(campaign.pk, ext_ids)

    assert set(by_hash) == {f"{7:064x}", f"{8:064x}"}
    assert set(by_external_id) == {"stored-7", "stored-8"}
    assert rows_read("feedback_item") - before == 4


def test_a_batch_into_a_campaign_newer_than_the_statistics_reads_only_its_keys(api_for, engineer):
    campaign = _items_of_a_campaign_the_statistics_predate(engineer, 20_000)
    batch = [{**GOOD, "external_id": f"pr-{n}", "prompt": f"Review diff {n}"} for n in range(12)]

    before = rows_read("feedback_item")
    res = api_for(engineer).post(f"/api/v1/campaigns/{campaign.pk}/items/", batch, format="json")

    assert res.status_code == 201, res.json()
    assert res.json()["created"] == 12
    # None of the 20,000 stored items is read to find that the batch's are new.
    assert rows_read("feedback_item") - before < 12
