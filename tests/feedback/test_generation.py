"""Generation against a real local HTTP server that speaks the OpenAI chat completions API.

The real `openai` client sends real HTTP to it; the server (tests/feedback/conftest.py) fails on
purpose (429, 500, 400) to exercise retries, backoff and per-item errors, and counts requests in
flight.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from feedback.models import Campaign, GenerationJob, QueueEntry, Response
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def generate(api_for, engineer, django_capture_on_commit_callbacks):
    client = api_for(engineer)

    def run(campaign, body: dict[str, Any]):
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(f"/api/v1/campaigns/{campaign.pk}/generate/", body, format="json")
        if res.status_code != 202:
            return res, None
        return res, client.get(f"/api/v1/generations/{res.json()['id']}/").json()

    return run


@pytest.mark.parametrize("role", ["expert", "lead"])
def test_an_engineer_made_expert_or_lead_no_longer_reads_their_generation(
    model_server, generate, api_for, engineer, role
):
    """A generation names the models compared, which experts and leads never see; its maker
    read it whatever their role now was."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)
    res, status = generate(campaign, {"models": ["secret-a", "secret-b"]})
    assert status["status"] == "succeeded", status
    engineer.role = role
    engineer.save(update_fields=["role"])

    assert api_for(engineer).get(f"/api/v1/generations/{res.json()['id']}/").status_code == 404


def test_it_fills_missing_responses_with_retries_usage_and_cost(model_server, generate):
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    waiting = ItemFactory.create_batch(4, campaign=campaign, responses=0, open_slots=0)
    done = ItemFactory(campaign=campaign)  # already has its responses: left alone

    res, status = generate(
        campaign,
        {
            "models": [
                {
                    "name": "rate-limited",
                    "input_usd_per_million": 2.5,
                    "output_usd_per_million": 10,
                },
                "flaky",
            ]
        },
    )

    assert res.status_code == 202
    assert status["status"] == "succeeded", status
    assert (status["items_total"], status["items_done"], status["responses_created"]) == (4, 4, 8)
    assert status["failed_count"] == 0
    assert status["completion_tokens"] == 8 * 7
    for item in waiting:
        item.refresh_from_db()
        assert item.queue.open_slots == 2, "generated items join the queue"
        first, second = item.responses.order_by("position")
        assert (first.model_name, second.model_name) == ("rate-limited", "flaky")
        assert first.text == f"rate-limited answers: {item.prompt}"
        assert first.generation["attempts"] == 2  # one 429, then success
        assert second.generation["attempts"] == 3  # two 500s, then success
        assert first.generation["latency_ms"] >= 0
        tokens = first.generation["prompt_tokens"]
        assert first.generation["cost_usd_micros"] == round(tokens * 2.5 + 7 * 10)
        # "flaky" was given no price: its cost is unknown, not free.
        assert second.generation["cost_usd_micros"] is None
        assert second.generation["completion_tokens"] == 7
    assert status["cost_usd_micros"] == sum(
        r.generation["cost_usd_micros"]
        for r in Response.objects.filter(item__in=waiting, model_name="rate-limited")
    )
    assert (status["answers_without_price"], status["answers_without_usage"]) == (4, 0)
    assert done.responses.count() == 2
    assert model_server.max_in_flight <= 3, "bounded concurrency"


def test_the_campaigns_own_models_carry_their_prices_into_each_response(
    api_for, engineer, model_server, generate
):
    """A campaign may hold its models with their prices, as a generation names them: a run
    on the campaign's models (`{}`) then counts what each answer cost."""
    client = api_for(engineer)
    made = client.post(
        "/api/v1/campaigns/",
        {
            "name": "Priced",
            "kind": "pairwise",
            "overlap": 1,
            "generation_models": [
                {"name": " m-paid ", "input_usd_per_million": 2, "output_usd_per_million": 10},
                " m-unpriced ",
            ],
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert made.json()["generation_models"] == [
        {"name": "m-paid", "input_usd_per_million": 2.0, "output_usd_per_million": 10.0},
        "m-unpriced",
    ]
    campaign = Campaign.objects.get(pk=made.json()["id"])
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {})

    assert status["status"] == "succeeded", status
    paid, unpriced = item.responses.order_by("position")
    assert (paid.model_name, unpriced.model_name) == ("m-paid", "m-unpriced")
    tokens = paid.generation["prompt_tokens"]
    assert paid.generation["cost_usd_micros"] == round(tokens * 2 + 7 * 10)
    assert unpriced.generation["cost_usd_micros"] is None
    assert status["cost_usd_micros"] == paid.generation["cost_usd_micros"]
    assert status["answers_without_price"] == 1


def test_a_campaigns_model_with_a_bad_price_is_refused_naming_it(api_for, engineer):
    res = api_for(engineer).post(
        "/api/v1/campaigns/",
        {
            "name": "Priced",
            "kind": "rating",
            "generation_models": [{"name": "m", "input_usd_per_million": -1}],
        },
        format="json",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "generation_models": [
            "generation_models[0].input_usd_per_million: must be a non-negative number"
        ]
    }
    assert not Campaign.objects.exists()


def test_an_item_whose_model_fails_for_good_stores_nothing_and_says_why(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["down"]})

    assert status["status"] == "failed"
    assert status["failed_count"] == 2
    assert {e["model"] for e in status["errors"]} == {"down"}
    assert {e["message"] for e in status["errors"]} == {
        "HTTP 503: overloaded (gave up after 4 attempts)"
    }
    assert Response.objects.count() == 0
    assert set(QueueEntry.objects.values_list("open_slots", flat=True)) == {0}


def test_a_client_error_is_not_retried(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["unknown"]})

    assert status["errors"] == [
        {"item": item.pk, "model": "unknown", "message": "HTTP 400: model 'unknown' does not exist"}
    ]
    assert model_server.calls[("unknown", item.prompt)] == 1


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            "tgi-error",
            "HTTP 422: Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096",
        ),
        ("fastapi-error", 'HTTP 422: [{"loc": ["body", "messages"], "msg": "field required"}]'),
        ("html-error", "HTTP 413: 413 Request Entity Too Large"),
    ],
)
def test_the_servers_reason_is_kept_whatever_the_shape_of_its_error(
    model_server, generate, model, said
):
    # Not "HTTP 422: Error code: 422": vLLM's and OpenAI's {"error": {"message"}} are not the
    # only shapes an OpenAI-compatible server answers an error with.
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [model]})

    assert status["errors"] == [{"item": item.pk, "model": model, "message": said}]


@pytest.mark.parametrize(
    ("prompt", "sent"),
    [
        (
            [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
            [
                {"role": "system", "content": 'You are terse.\n\nContext:\n{\n "doc": "D"\n}'},
                {"role": "user", "content": "Hi"},
            ],
        ),
        (
            "Hi",
            [
                {"role": "system", "content": 'Context:\n{\n "doc": "D"\n}'},
                {"role": "user", "content": "Hi"},
            ],
        ),
    ],
    ids=["own system message", "text prompt"],
)
def test_the_context_goes_in_one_system_message(model_server, generate, prompt, sent):
    # Two system messages in a row are refused by the chat templates of Llama 2, Mistral and
    # Gemma as vLLM applies them: the context joins the prompt's own system message.
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0, prompt=prompt, context={"doc": "D"})

    _res, status = generate(campaign, {"models": ["plain"]})

    assert status["status"] == "succeeded", status
    assert model_server.last_messages["plain"] == sent


def test_an_answer_given_as_content_parts_is_its_text_parts(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["parts-content"]})

    assert status["status"] == "succeeded", status
    assert item.responses.get().text == f"parts-content answers: {item.prompt}"


@pytest.mark.parametrize("models", ["plain", {"name": "plain"}], ids=["a name", "an object"])
def test_models_that_are_not_a_list_are_told_so(model_server, generate, models):
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    res, _ = generate(campaign, {"models": models})

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "models": [
            'must be a list of models, each a name or {"name": ..., "input_usd_per_million": ...}'
        ]
    }
    assert model_server.requests == 0


def test_one_failing_model_of_a_pair_leaves_the_item_without_responses(model_server, generate):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["flaky", "unknown"]})

    assert status["failed_count"] == 1
    assert [e["model"] for e in status["errors"]] == ["unknown"]
    assert not item.responses.exists()


def test_the_campaigns_model_list_is_the_default_and_a_rerun_is_harmless(
    model_server, generate, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(kind="rating", overlap=1, generation_models=["m-1"])
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {})
    assert status["responses_created"] == 2
    from feedback.generation import generation_run

    assert generation_run(generation_id=status["id"]).responses_created == 2
    _again, status = generate(campaign, {})
    assert status["items_total"] == 0
    assert Response.objects.count() == 2


def test_bad_requests_are_refused(model_server, generate, api_for, expert, settings):
    pairwise = CampaignFactory(kind="pairwise")
    res, _ = generate(pairwise, {"models": ["only-one"]})
    assert res.status_code == 400
    assert "exactly 2 models" in res.json()["error"]["fields"]["models"][0]
    res, _ = generate(pairwise, {"models": ["a", "b"], "item_ids": [999999]})
    assert "item_ids" in res.json()["error"]["fields"]
    # Each id that is not one named by its place, as a model is.
    res, _ = generate(pairwise, {"models": ["a", "b"], "item_ids": [1, "2", True]})
    assert res.json()["error"]["fields"] == {
        "item_ids[1]": ["must be an item id, got '2'"],
        "item_ids[2]": ["must be an item id, got true"],
    }
    res, _ = generate(pairwise, {"models": ["a", "b"], "item_ids": 7})
    assert res.json()["error"]["fields"] == {"item_ids": ["must be a list of item ids, got 7"]}

    denied = api_for(expert).post(
        f"/api/v1/campaigns/{pairwise.pk}/generate/", {"models": ["a", "b"]}, format="json"
    )
    assert denied.status_code == 403
    settings.OPENAI_BASE_URL = ""
    res, _ = generate(pairwise, {"models": ["a", "b"]})
    assert res.status_code == 400
    assert "OPENAI_BASE_URL" in res.json()["error"]["message"]
    assert GenerationJob.objects.count() == 0


def test_an_outsider_cannot_read_a_generation_job(model_server, generate, api_for, expert):
    campaign = CampaignFactory(kind="rating", generation_models=["m-1"])
    _res, status = generate(campaign, {})
    assert api_for(expert).get(f"/api/v1/generations/{status['id']}/").status_code == 404


@pytest.fixture
def responses_refused() -> None:
    """PostgreSQL refuses every response: a trigger that raises on each insert (the test's
    transaction takes it away)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_response() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_response BEFORE INSERT ON feedback_response"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse_response()"
        )


@pytest.fixture
def progress_refused(transactional_db) -> Iterator[None]:
    """PostgreSQL refuses a generation job's progress: a trigger raising when items_done grows.
    With the test's writes committed (as the worker's are), so the refused statement ends only
    itself; the trigger is dropped afterwards (a flush leaves it)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_progress() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'progress refused by the test'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_progress BEFORE UPDATE ON feedback_generationjob"
            " FOR EACH ROW WHEN (NEW.items_done > OLD.items_done)"
            " EXECUTE FUNCTION test_refuse_progress()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_refuse_progress ON feedback_generationjob")
            cursor.execute("DROP FUNCTION test_refuse_progress()")


def test_what_was_spent_is_counted_when_recording_the_progress_fails(
    model_server, generate, progress_refused
):
    """The job fails saying so, and the answer's tokens and cost, which the refused update
    was to add, are in its failure record, not lost with it."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [{"name": "plain", "output_usd_per_million": 3}]})

    assert status["status"] == "failed", status
    assert status["message"].startswith("The generation failed while recording its progress")
    assert (status["completion_tokens"], status["cost_usd_micros"]) == (7, 7 * 3)


def test_a_response_the_database_refuses_fails_the_job_saying_where_and_why(
    model_server, generate, caplog, responses_refused
):
    """PostgreSQL refuses the response: the job ends failed with the reason instead of
    staying running, and its lock is released."""
    from django.db import connection

    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["plain"]})

    assert status["status"] == "failed", status
    assert status["message"].startswith(
        f"The generation failed while storing the responses of item {item.pk}: ProgrammingError: "
        "refused by the test"
    ), status["message"]
    assert status["message"].endswith(
        "Responses stored before that are kept; generate again for the rest."
    )
    assert status["finished_at"]
    assert status["completion_tokens"] == 7, "the answer was billed though not stored"
    assert not item.responses.exists()
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0
    assert f"generation {status['id']} failed" in caplog.text
    assert "Traceback" in caplog.text
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone() == (0,)


def test_nul_characters_in_what_the_server_says_of_itself_are_stored_replaced(
    model_server, generate
):
    """A model's reported name and a server's error message go into JSON records, where
    PostgreSQL cannot store a NUL character or a lone surrogate: each is stored as U+FFFD,
    and the job goes on."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    named = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    refused = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["nul-name"], "item_ids": [named.pk]})
    assert status["status"] == "succeeded", status
    assert named.responses.get().generation["model"] == "nul\ufffdname"
    other = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    _res, status = generate(campaign, {"models": ["surrogate-name"], "item_ids": [other.pk]})
    assert status["status"] == "succeeded", status
    assert other.responses.get().generation["model"] == "surrogate\ufffdname"

    _res, status = generate(campaign, {"models": ["nul-error"], "item_ids": [refused.pk]})
    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "item": refused.pk,
            "model": "nul-error",
            "message": "HTTP 400: no such model:\ufffd nul-error",
        }
    ]


def test_an_answer_with_a_nul_character_is_an_error_of_its_item_only(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    other = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["nul"], "item_ids": [item.pk]})
    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "nul",
            "message": "the model's text holds a NUL character, which cannot be stored",
        }
    ]
    assert not item.responses.exists()

    _res, status = generate(campaign, {"models": ["plain"], "item_ids": [other.pk]})
    assert status["status"] == "succeeded", status
    assert other.responses.count() == 1


def test_an_answer_longer_than_a_response_holds_is_an_error_of_its_item(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["rambles"]})

    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "rambles",
            "message": "the answer has 1,000,010 characters; a response holds at most 1,000,000",
        }
    ]
    assert not item.responses.exists()


def test_an_answer_with_a_lone_surrogate_is_an_error_of_its_item_only(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    _res, status = generate(campaign, {"models": ["surrogate"]})
    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "surrogate",
            "message": "the model's text holds a lone UTF-16 surrogate (an escape such as"
            " \\ud800 alone), which is not a character and cannot be stored",
        }
    ]
    assert not item.responses.exists()


def test_a_setting_that_stops_the_run_from_starting_fails_the_job(model_server, generate, settings):
    settings.GENERATION_CONCURRENCY = 0
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["plain"]})

    assert status["status"] == "failed", status
    assert status["message"].startswith("The generation failed while starting: ValueError: ")


def test_one_generation_at_a_time_per_campaign(model_server, api_for, engineer):
    """A second request while one is queued (a double click, a retried POST) is refused
    instead of asking, and paying, for the same items twice."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{campaign.pk}/generate/"

    first = client.post(url, {"models": ["plain"]}, format="json")  # queued: not run here
    second = client.post(url, {"models": ["plain"]}, format="json")

    assert first.status_code == 202
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "generation_in_progress"
    assert f"Generation {first.json()['id']} of this campaign is queued" in error["message"]
    assert GenerationJob.objects.count() == 1
    other = CampaignFactory(kind="rating", overlap=1)
    assert (
        client.post(
            f"/api/v1/campaigns/{other.pk}/generate/", {"models": ["plain"]}, format="json"
        ).status_code
        == 202
    )


def test_a_misspelt_key_or_a_body_that_is_not_an_object_asks_no_model(
    model_server, api_for, engineer
):
    # Each would otherwise be read as "every item lacking responses, the campaign's models":
    # a job asking (and paying) for far more than the client meant.
    campaign = CampaignFactory(kind="rating", overlap=1, generation_models=["plain"])
    ItemFactory.create_batch(3, campaign=campaign, responses=0, open_slots=0)
    url = f"/api/v1/campaigns/{campaign.pk}/generate/"
    client = api_for(engineer)

    misspelt = client.post(url, {"items": [1]}, format="json")
    assert misspelt.status_code == 400
    assert misspelt.json()["error"]["fields"] == {
        "items": ["is not a field of a generation request"]
    }
    for body in ('[{"name": "plain"}]', '"plain"', "null", "[]"):
        res = client.post(url, data=body, content_type="application/json")
        assert res.status_code == 400, body
        assert res.json()["error"]["fields"] == {"body": ["must be a JSON object"]}
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0


@pytest.mark.parametrize(
    ("models", "field", "said"),
    [
        ('["%s"]' % ("m" * 201), "models[0]", "is longer than 200 characters"),
        ('[{"name": "%s"}]' % ("m" * 201), "models[0].name", "is longer than 200 characters"),
        ('["bad\\u0000name"]', "models[0]", "NUL character"),
        ('[{"name": "x", "temperature": 1e400}]', "models[0].temperature", "non-negative number"),
        (
            '[{"name": "x", "input_usd_per_million": 1e300}]',
            "models[0].input_usd_per_million",
            "must be at most 100,000 (USD per million tokens)",
        ),
    ],
)
def test_a_model_name_or_setting_that_cannot_be_stored_is_refused_before_any_request(
    model_server, api_for, engineer, models, field, said
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    # As a client sends it: the JSON text, where \u0000 is a NUL and 1e400 an infinite number.
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/generate/",
        data=f'{{"models": {models}}}',
        content_type="application/json",
    )

    assert res.status_code == 400
    fields = res.json()["error"]["fields"]
    assert list(fields) == [field]
    assert said in fields[field][0]
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0


def test_an_empty_item_list_is_refused_not_read_as_every_item(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    res, _ = generate(campaign, {"models": ["plain"], "item_ids": []})

    assert res.status_code == 400
    assert "names no item" in res.json()["error"]["fields"]["item_ids"][0]
    assert GenerationJob.objects.count() == 0


def test_an_empty_model_list_is_refused_not_read_as_the_campaigns_models(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1, generation_models=["plain"])
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    res, _ = generate(campaign, {"models": []})

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "models": ["names no model; leave it out to use the campaign's generation_models"]
    }
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0


@pytest.mark.parametrize(
    ("body", "field", "said"),
    [
        (
            {"models": ["plain"], "item_ids": None},
            "item_ids",
            "is null; leave it out to generate for every item lacking responses",
        ),
        (
            {"models": None},
            "models",
            "is null; leave it out to use the campaign's generation_models",
        ),
    ],
    ids=["item_ids", "models"],
)
def test_a_null_is_refused_not_read_as_the_default(model_server, generate, body, field, said):
    # A client whose list came out None did not mean every item, or the campaign's models.
    campaign = CampaignFactory(kind="rating", overlap=1, generation_models=["plain"])
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)

    res, _ = generate(campaign, body)

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {field: [said]}
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0


def test_items_pushed_after_the_request_are_not_part_of_the_job(model_server, api_for, engineer):
    from feedback.generation import generation_run

    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)
    res = api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/generate/", {"models": ["plain"]}, format="json"
    )
    later = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    job = generation_run(generation_id=res.json()["id"])

    assert (job.items_total, job.items_done, job.responses_created) == (2, 2, 2)
    assert not later.responses.exists()


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("bad-key", "HTTP 401: Incorrect API key"),
        ("no-quota", "HTTP 429: You exceeded your current quota"),
    ],
)
def test_an_error_every_item_would_meet_stops_the_job(model_server, generate, model, said):
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(12, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [model]})

    assert status["status"] == "failed"
    # The requests already in flight (3 at a time) end; no other is sent, none is retried.
    asked = sum(model_server.calls.values())
    assert asked <= 3
    assert set(model_server.calls.values()) == {1}
    assert status["message"] == (
        f"Stopped after {asked} of 12 items: model {model}: {said}. Generated responses for 0"
        f" of {asked} items; {asked} failed (see errors). Items with responses are skipped when"
        " you generate again."
    )
    assert Response.objects.count() == 0


def test_items_failing_in_a_row_stop_the_job(model_server, generate, settings):
    """A login page where the API should be: every answer is an error, and after
    GENERATION_STOP_AFTER_FAILURES items in a row the job stops instead of trying them all."""
    settings.GENERATION_STOP_AFTER_FAILURES = 4
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(20, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["login-page"]})

    assert status["status"] == "failed"
    # The requests in flight when it stopped (3 at a time) end, and their items count.
    done = status["items_done"]
    assert 4 <= done < 20
    assert status["message"].startswith(
        f"Stopped after {done} of 20 items: 4 items in a row failed (the last, model login-page:"
        " the server's answer is not a chat completion: '<html>Sign in</html>')."
    ), status["message"]
    assert status["failed_count"] == done
    assert sum(model_server.calls.values()) == done


def test_an_answer_read_by_its_deadline_still_reports_how_long_it_took(model_server):
    """The deadline reads the answer through a stream of its own; the response still says how
    long the request took, as the client's own stream does (`response.elapsed`)."""
    from feedback.generation import _client

    raw = _client().chat.completions.with_raw_response.create(
        model="steady", messages=[{"role": "user", "content": "Hello"}]
    )

    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content
    assert raw.http_response.is_closed
    assert datetime.timedelta(0) < raw.elapsed < datetime.timedelta(seconds=30)
    assert raw.http_response.elapsed == raw.elapsed


def test_a_request_timeout_is_retried_and_a_bad_retry_after_ignored(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["timeout-once"]})

    assert status["status"] == "succeeded", status
    assert item.responses.get().generation["attempts"] == 2


@pytest.mark.parametrize("model", ["trickles", "trickles-a-redirect"])
def test_an_answer_that_never_finishes_coming_times_out_at_the_deadline(
    model_server, generate, settings, model
):
    """The server sends a byte every 50 ms, so no read waits long, for three minutes (of the
    answer, or of a redirect's body, which the client reads before following it): each
    attempt ends at the request's deadline, as a timeout, and the item fails saying so."""
    settings.GENERATION_TIMEOUT_SECONDS = 5
    settings.GENERATION_REQUEST_DEADLINE_SECONDS = 0.5
    settings.GENERATION_MAX_ATTEMPTS = 2
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [model]})

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": model,
            "message": "timed out: the answer did not all come within 0.5 s"
            " (gave up after 2 attempts)",
        }
    ]
    assert model_server.calls[(model, item.prompt)] == 2
    assert not item.responses.exists()


def test_an_error_in_a_200_body_is_retried_and_its_message_kept(model_server, generate):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["gateway-error"]})

    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "gateway-error",
            "message": "error in a 200 answer: 502: upstream failed (gave up after 4 attempts)",
        }
    ]
    assert model_server.calls[("gateway-error", item.prompt)] == 4


@pytest.mark.parametrize("model", ["no-usage", "null-usage", "huge-usage"])
def test_an_answer_without_usage_is_counted_as_unknown_not_free(model_server, generate, model):
    campaign = CampaignFactory(kind="rating", overlap=1)
    items = ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [{"name": model, "input_usd_per_million": 3}]})

    assert status["status"] == "succeeded", status
    for item in items:
        generation = item.responses.get().generation
        assert generation["prompt_tokens"] is None
        assert generation["cost_usd_micros"] is None
    assert (status["answers_without_usage"], status["cost_usd_micros"]) == (2, 0)
    assert status["answers_without_price"] == 0, "its price is known; its usage is not"


def test_a_price_of_zero_is_free_and_one_price_prices_the_model(model_server, generate):
    """A model given a price of 0 (a model served on one's own machines) costs nothing; a
    model given only its output price costs nothing for its input."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(
        campaign,
        {
            "models": [
                {"name": "local", "input_usd_per_million": 0, "output_usd_per_million": 0},
                {"name": "hosted", "output_usd_per_million": 4},
            ]
        },
    )

    assert status["status"] == "succeeded", status
    local, hosted = item.responses.order_by("position")
    assert local.generation["cost_usd_micros"] == 0
    assert hosted.generation["cost_usd_micros"] == 7 * 4
    assert (status["cost_usd_micros"], status["answers_without_price"]) == (7 * 4, 0)


def test_what_was_spent_on_answers_not_stored_is_counted(model_server, generate):
    """The good side of a pair whose other side failed, and an answer with no text: both
    were billed, so both are in the job's tokens and cost, though neither is stored."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    prices = {"input_usd_per_million": 1, "output_usd_per_million": 2}

    _res, status = generate(
        campaign,
        {"models": [{"name": "plain", **prices}, {"name": "thinks-too-long", **prices}]},
    )

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "thinks-too-long",
            "message": "the model returned no text (finish_reason: length)",
        }
    ]
    assert not item.responses.exists()
    assert status["completion_tokens"] == 2 * 7
    assert status["cost_usd_micros"] == status["prompt_tokens"] * 1 + 2 * 7 * 2 > 0


def test_an_answer_of_whitespace_alone_fails_its_item_and_opens_no_slot(model_server, generate):
    """It was stored, and the item queued for experts to rate a blank answer."""
    campaign = CampaignFactory(kind="rating", overlap=2)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["blank"]})

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "blank",
            "message": "the model returned no text (finish_reason: stop)",
        }
    ]
    assert not item.responses.exists()
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0


def test_a_job_that_fails_counts_the_answers_in_flight_when_it_failed(
    model_server, generate, responses_refused
):
    """The first answer's response is refused; the others, asked at the same time, are
    answered (and billed) while the job stops: all are in its totals."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    ItemFactory.create_batch(3, campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": ["plain"]})

    assert status["status"] == "failed", status
    assert model_server.requests == 3, "the three asked at once (3 in flight)"
    assert status["completion_tokens"] == 3 * 7


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            {"name": "cut-off", "max_tokens": 64},
            "the answer was cut off at its max_tokens of 64 (finish_reason: length); give the"
            " model a higher max_tokens",
        ),
        (
            "cut-off",
            "the answer was cut off at the server's limit on tokens (finish_reason: length);"
            " give the model a max_tokens that holds a whole answer",
        ),
        (
            "filtered",
            "the answer was stopped by the server's content filter (finish_reason: content_filter)",
        ),
    ],
)
def test_an_answer_cut_off_is_an_error_of_its_item_and_not_given_to_experts(
    model_server, generate, model, said
):
    """Experts would compare a text that stops mid-sentence: the item fails, stores nothing
    and stays out of the queue; the answer is still counted as spent."""
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    name = model if isinstance(model, str) else model["name"]

    _res, status = generate(campaign, {"models": ["plain", model]})

    assert status["status"] == "failed", status
    assert status["errors"] == [{"item": item.pk, "model": name, "message": said}]
    assert (status["items_done"], status["failed_count"], status["responses_created"]) == (1, 1, 0)
    assert status["message"] == "Generated responses for 0 of 1 items; 1 failed (see errors)."
    assert status["completion_tokens"] == 2 * 7
    assert not item.responses.exists()
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            "broken-json",
            """Unterminated string starting at character 46): '{"id": "chatcmpl-1","""
            """ "choices": [{"index": 0, "mess'""",
        ),
        ("latin-1-json", """not UTF-8 text at byte 13): '{"note": "caf\ufffd"}'"""),
    ],
)
def test_an_answer_that_is_not_valid_json_quotes_its_start_and_logs_one_line(
    model_server, generate, caplog, model, said
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    _res, status = generate(campaign, {"models": [model]})

    assert status["errors"] == [
        {
            "item": item.pk,
            "model": model,
            "message": f"the server's answer is not valid JSON ({said}",
        }
    ]
    assert model_server.calls[(model, item.prompt)] == 1
    logged = [r for r in caplog.records if r.name == "feedback.generation"]
    assert [r.getMessage() for r in logged] == [
        f"generation: the answer of {model} for item {item.pk} is not valid JSON"
    ]
    assert not any(r.exc_info for r in logged)
    assert "Traceback" not in caplog.text


def test_a_campaigns_model_count_that_does_not_fit_its_kind_is_refused_where_it_is_given(
    api_for, engineer
):
    """A generation on the campaign's models would refuse them, naming `models`, which its
    request did not send: the campaign is refused instead, naming generation_models."""
    client = api_for(engineer)
    made = client.post(
        "/api/v1/campaigns/",
        {"name": "P", "kind": "pairwise", "generation_models": ["m-a", "m-b", "m-c"]},
        format="json",
    )
    assert made.status_code == 400, made.json()
    assert made.json()["error"]["fields"] == {
        "generation_models": ["a pairwise campaign needs exactly 2 models, got 3"]
    }

    campaign = CampaignFactory(kind="pairwise")
    changed = client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"generation_models": ["m-a"]}, format="json"
    )
    assert changed.status_code == 400, changed.json()
    assert changed.json()["error"]["fields"] == {
        "generation_models": ["a pairwise campaign needs exactly 2 models, got 1"]
    }
    assert client.patch(
        f"/api/v1/campaigns/{campaign.pk}/", {"generation_models": ["m-a", "m-b"]}, format="json"
    ).json()["generation_models"] == ["m-a", "m-b"]
