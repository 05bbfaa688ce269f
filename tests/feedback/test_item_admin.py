"""An item made or edited in the Django admin has its place in the review queue."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages

from feedback.item_input import ResponseInput, content_hash
from feedback.models import Item, QueueEntry, Response, User
from reviews import services as reviews
from reviews.models import Assignment
from tests.db_locks import Started, another_session_waits_for_a_lock, held_open
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.feedback.intake_lock import intake_held_elsewhere
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
    totp_turn_on,
)

pytestmark = pytest.mark.django_db

ADD = "/admin/feedback/item/add/"


def form(campaign_id: int, *, prompt: str, priority: int, responses: list[str]) -> dict:
    """The add form of an item with new inline responses."""
    data = {
        "campaign": campaign_id,
        "prompt": f'"{prompt}"',
        "context": "{}",
        "metadata": "{}",
        "priority": priority,
        "gold_answer": "null",
        "created_at_0": "2026-11-29",
        "created_at_1": "10:00:00",
        "responses-TOTAL_FORMS": len(responses),
        "responses-INITIAL_FORMS": 0,
        "responses-MIN_NUM_FORMS": 0,
        "responses-MAX_NUM_FORMS": 1000,
    }
    for n, text in enumerate(responses):
        data |= _response(n, model_name=f"model-{n}", text=text, position=n)
    return data


def _response(n: int, *, model_name: str, text: str, position: int) -> dict:
    return {
        f"responses-{n}-model_name": model_name,
        f"responses-{n}-text": text,
        f"responses-{n}-format": "markdown",
        f"responses-{n}-position": position,
        f"responses-{n}-generation": "{}",
        f"responses-{n}-images": "[]",
        f"responses-{n}-created_at_0": "2026-11-29",
        f"responses-{n}-created_at_1": "10:00:00",
    }


def _post_edit(client, item: Item, *, new_responses: tuple[str, ...] = (), **changes):
    """Post the change form of a stored item as a browser does: its responses as they are
    (line breaks sent as CRLF, as browsers send a textarea's), `new_responses` added (at the
    positions after them), and `changes` to any field of the form."""
    stored = list(item.responses.order_by("position"))
    data = form(
        item.campaign_id,
        prompt=item.prompt,
        priority=changes.pop("priority", item.priority),
        responses=[],
    )
    for n, response in enumerate(stored):
        data |= _response(
            n,
            model_name=response.model_name,
            text=response.text.replace("\n", "\r\n"),
            position=response.position,
        )
        data |= {f"responses-{n}-id": response.pk, f"responses-{n}-item": item.pk}
    for n, text in enumerate(new_responses, start=len(stored)):
        data |= _response(n, model_name=f"model-{n}", text=text, position=n)
    data |= {
        "responses-TOTAL_FORMS": len(stored) + len(new_responses),
        "responses-INITIAL_FORMS": len(stored),
        "external_id": item.external_id or "",
        **changes,
    }
    return client.post(f"/admin/feedback/item/{item.pk}/change/", data)


def edit(client, item: Item, *, new_responses: tuple[str, ...] = (), **changes) -> None:
    """The change form posted (see _post_edit), and saved."""
    page = _post_edit(client, item, new_responses=new_responses, **changes)
    assert page.status_code == 302, page.content.decode()[:3000]
    item.refresh_from_db()


def test_an_item_added_with_responses_joins_the_queue_and_can_be_claimed(admin_mfa_client):
    campaign = CampaignFactory(overlap=2)
    page = admin_mfa_client.post(
        ADD, form(campaign.pk, prompt="Which is clearer?", priority=5, responses=["A", "B"])
    )
    assert page.status_code == 302, page.content.decode()[:3000]
    item = Item.objects.get(campaign=campaign)
    assert (item.queue.open_slots, item.queue.priority, item.queue.campaign_id) == (
        2,
        5,
        campaign.pk,
    )

    expert = UserFactory(role=User.Role.EXPERT)
    assignment = reviews.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    assert assignment.item_id == item.pk
    item.refresh_from_db()
    assert item.queue.open_slots == 1


def test_an_item_added_without_responses_waits_outside_the_queue(admin_mfa_client):
    campaign = CampaignFactory(overlap=2)
    page = admin_mfa_client.post(ADD, form(campaign.pk, prompt="Later", priority=0, responses=[]))
    assert page.status_code == 302, page.content.decode()[:3000]
    assert QueueEntry.objects.get(item__campaign=campaign).open_slots == 0
    expert = UserFactory(role=User.Role.EXPERT)
    assert reviews.assignment_claim(campaign=campaign, expert=expert) is None


def test_a_priority_changed_in_the_admin_reorders_the_queue(admin_mfa_client):
    campaign = CampaignFactory(overlap=1)
    first = ItemFactory(campaign=campaign, priority=1)
    second = ItemFactory(campaign=campaign, priority=0)
    edit(admin_mfa_client, second, priority=9)
    assert (second.priority, second.queue.priority, second.queue.open_slots) == (9, 9, 1)

    expert = UserFactory(role=User.Role.EXPERT)
    assignment = reviews.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    assert assignment.item_id == second.pk, "now first by priority"
    assert QueueEntry.objects.get(pk=first.pk).open_slots == 1


def test_responses_added_later_in_the_admin_bring_the_item_into_the_queue(admin_mfa_client):
    campaign = CampaignFactory(overlap=2)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    edit(admin_mfa_client, item, new_responses=("A", "B"))
    assert item.responses.count() == 2
    assert item.queue.open_slots == 2
    expert = UserFactory(role=User.Role.EXPERT)
    assignment = reviews.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    assert assignment.item_id == item.pk


def test_an_item_made_gold_in_the_admin_leaves_the_queue(admin_mfa_client):
    campaign = CampaignFactory(overlap=3)
    item = ItemFactory(campaign=campaign)
    taken = reviews.assignment_claim(campaign=campaign, expert=UserFactory())
    assert taken is not None
    assert taken.item_id == item.pk
    edit(admin_mfa_client, item, is_gold="on", gold_answer='{"chosen_position": 0}')
    assert item.is_gold
    assert item.queue.open_slots == 0
    assert reviews.assignment_claim(campaign=campaign, expert=UserFactory()) is None


def _answer(assignment, expert) -> None:
    reviews.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )


def test_an_item_no_longer_gold_is_not_given_again_to_those_who_answered_it(admin_mfa_client):
    campaign = CampaignFactory(overlap=2, gold_rate=1.0)
    gold = ItemFactory(
        campaign=campaign, is_gold=True, gold_answer={"chosen_position": 0}, open_slots=0
    )
    other = ItemFactory(campaign=campaign)
    answered = UserFactory(role=User.Role.EXPERT)
    taken = reviews.assignment_claim(campaign=campaign, expert=answered)
    assert (taken.item_id, taken.is_gold) == (gold.pk, True)
    _answer(taken, answered)
    campaign.gold_rate = 0
    campaign.save()

    edit(admin_mfa_client, gold, gold_answer="null")  # the box unticked: not gold

    gold.refresh_from_db()
    assert not gold.is_gold
    assert (gold.queue.open_slots, gold.queue.started) == (2, True)
    again = reviews.assignment_claim(campaign=campaign, expert=answered)
    assert again is not None
    assert again.item_id == other.pk, "never the same item twice"
    # The earlier gold answer takes no slot: two experts more may have the item.
    takers = [reviews.assignment_claim(campaign=campaign, expert=UserFactory()) for _ in range(3)]
    assert sorted(t.item_id for t in takers) == sorted([other.pk, gold.pk, gold.pk])
    assert QueueEntry.objects.get(pk=gold.pk).open_slots == 0


def test_a_claim_mends_a_queue_row_left_fresh_after_its_item_was_had():
    # Whatever left it so (an edit made behind the app's back), an item an expert had that
    # sits in the queue as fresh is not given to them again, and the claim goes on.
    campaign = CampaignFactory(overlap=2)
    first, second = ItemFactory(campaign=campaign), ItemFactory(campaign=campaign)
    expert = UserFactory(role=User.Role.EXPERT)
    taken = reviews.assignment_claim(campaign=campaign, expert=expert)
    assert taken.item_id == first.pk
    _answer(taken, expert)
    QueueEntry.objects.filter(pk=first.pk).update(started=False)

    again = reviews.assignment_claim(campaign=campaign, expert=expert)

    assert again is not None
    assert again.item_id == second.pk
    assert QueueEntry.objects.get(pk=first.pk).started


def test_a_claim_on_an_item_made_gold_since_gives_no_slot_back_when_it_ends(admin_mfa_client):
    from datetime import timedelta

    from django.utils import timezone

    from reviews.models import Assignment

    campaign = CampaignFactory(overlap=3)
    item = ItemFactory(campaign=campaign)
    skipper, sleeper = UserFactory(role=User.Role.EXPERT), UserFactory(role=User.Role.EXPERT)
    skipped = reviews.assignment_claim(campaign=campaign, expert=skipper)
    lapsed = reviews.assignment_claim(campaign=campaign, expert=sleeper)
    assert skipped.item_id == lapsed.item_id == item.pk
    edit(admin_mfa_client, item, is_gold="on", gold_answer='{"chosen_position": 0}')
    assert item.queue.open_slots == 0

    reviews.assignment_skip(assignment_id=skipped.pk, expert=skipper, reason="too_long")
    Assignment.objects.filter(pk=lapsed.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert reviews.assignments_expire_due(campaign_id=campaign.pk) == 1

    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0
    assert reviews.assignment_claim(campaign=campaign, expert=UserFactory()) is None


def test_slots_edited_in_the_admin_count_the_live_assignments(admin_mfa_client):
    campaign = CampaignFactory(overlap=3)
    item = ItemFactory(campaign=campaign)
    for _ in range(2):
        assert reviews.assignment_claim(campaign=campaign, expert=UserFactory()) is not None
    edit(admin_mfa_client, item, priority=4)
    assert (item.queue.priority, item.queue.open_slots) == (4, 1)


def test_responses_typed_in_the_admin_get_ids_in_a_random_order_and_keep_their_positions(
    admin_mfa_client,
):
    """Blind review: the lower id must not be the response typed first. Over 24 items the
    first-typed response has the lower id in some and the higher in others (each outcome
    is missed with a chance of 2**-24); `position` keeps the form's order in all."""
    campaign = CampaignFactory(overlap=1)
    first_lower = set()
    for n in range(24):
        page = admin_mfa_client.post(
            ADD, form(campaign.pk, prompt=f"Prompt {n}", priority=0, responses=["A", "B"])
        )
        assert page.status_code == 302, page.content.decode()[:3000]
        item = Item.objects.get(campaign=campaign, prompt=f"Prompt {n}")
        by_position = list(item.responses.order_by("position").values_list("text", "pk"))
        assert [text for text, _pk in by_position] == ["A", "B"]
        first_lower.add(by_position[0][1] < by_position[1][1])
    assert first_lower == {True, False}


def test_new_responses_left_at_one_position_are_numbered_in_the_form_order(admin_mfa_client):
    campaign = CampaignFactory(kind="ranking", overlap=1)
    data = form(campaign.pk, prompt="Tied", priority=0, responses=["A", "B", "C"])
    data |= {f"responses-{n}-position": 0 for n in range(3)}
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 302, page.content.decode()[:3000]
    item = Item.objects.get(campaign=campaign)
    assert list(item.responses.order_by("position").values_list("text", "position")) == [
        ("A", 0),
        ("B", 1),
        ("C", 2),
    ]

    # Added later at positions the item's responses already have: after them, in order.
    edit(
        admin_mfa_client,
        item,
        new_responses=("D", "E"),
        **{"responses-3-position": 1, "responses-4-position": 1},
    )
    texts = list(item.responses.order_by("position").values_list("text", "position"))
    assert texts == [(t, n) for n, t in enumerate("ABCDE")], texts

    # Positions of their own are kept.
    edit(
        admin_mfa_client,
        item,
        new_responses=("F", "G"),
        **{"responses-5-position": 20, "responses-6-position": 10},
    )
    texts = list(item.responses.order_by("position").values_list("text", "position"))
    assert texts == [*((t, n) for n, t in enumerate("ABCDE")), ("G", 10), ("F", 20)], texts


def test_an_item_typed_twice_is_a_form_error_and_the_api_sees_it_as_a_duplicate(
    admin_mfa_client, api_for, engineer, pairwise_campaign
):
    """An item made in the admin has the content hash the API gives the same content: typed
    again, the form names the stored item and saves nothing; sent through the API, it is
    reported as a duplicate."""
    data = form(pairwise_campaign.pk, prompt="Which?", priority=0, responses=["A", "B"])
    assert admin_mfa_client.post(ADD, data).status_code == 302
    stored = Item.objects.get(campaign=pairwise_campaign)

    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 200
    assert (
        f"Item {stored.pk} of this campaign has the same prompt, context and responses."
        in page.content.decode()
    )
    assert Item.objects.filter(campaign=pairwise_campaign).count() == 1

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/",
        [
            {
                "prompt": "Which?",
                "responses": [{"model": "model-0", "text": "A"}, {"model": "model-1", "text": "B"}],
            }
        ],
        format="json",
    )
    assert res.status_code == 201, res.json()
    assert res.json()["created"] == 0
    assert [d["index"] for d in res.json()["duplicates"]] == [0]


def _hash_of(item: Item) -> str:
    responses = item.responses.order_by("position", "id")
    return content_hash(
        item.prompt,
        item.context,
        [ResponseInput(r.model_name, r.text, r.format, r.images) for r in responses],
    )


def test_a_response_added_in_the_admin_is_hashed_with_the_others_by_position(admin_mfa_client):
    campaign = CampaignFactory(kind="ranking", overlap=1)
    data = form(campaign.pk, prompt="Which?", priority=0, responses=["A", "B"])
    assert admin_mfa_client.post(ADD, data).status_code == 302
    item = Item.objects.get(campaign=campaign)
    before = item.content_hash
    assert before == _hash_of(item)
    edit(admin_mfa_client, item, new_responses=("C",))
    assert item.content_hash == _hash_of(item) != before


def test_an_item_from_the_api_saved_unchanged_in_the_admin_keeps_its_text_and_hash(
    admin_mfa_client, api_for, engineer, pairwise_campaign
):
    """Texts with line breaks and surrounding spaces come back from a browser with CRLF line
    breaks: they are stored as they were, the hash stays the API's, and the API still sees
    the item as a duplicate."""
    sent = {
        "prompt": "Which is right?",
        "responses": [
            {"model": "m-a", "text": "  First line\nsecond line\n"},
            {"model": "m-b", "text": "Only one line "},
        ],
    }
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    client = api_for(engineer)
    assert client.post(url, [sent], format="json").json()["created"] == 1
    item = Item.objects.get(campaign=pairwise_campaign)
    texts, stored_hash = list(item.responses.values_list("text", flat=True)), item.content_hash

    edit(admin_mfa_client, item, priority=7)

    assert item.priority == 7
    assert list(item.responses.values_list("text", flat=True)) == texts
    assert item.content_hash == stored_hash
    assert client.post(url, [sent], format="json").json()["duplicates"][0]["index"] == 0


def test_an_item_whose_responses_were_generated_keeps_the_hash_of_its_prompt(
    admin_mfa_client, api_for, engineer
):
    """Generation adds responses to an item sent without them and leaves its hash (over the
    prompt alone), so sending the prompt again is a duplicate: saving the item in the admin
    without touching its content keeps that."""
    campaign = CampaignFactory(kind="rating", created_by=engineer)
    url = f"/api/v1/campaigns/{campaign.pk}/items/"
    client = api_for(engineer)
    assert client.post(url, [{"prompt": "Summarise"}], format="json").json()["created"] == 1
    item = Item.objects.get(campaign=campaign)
    Response.objects.create(item=item, model_name="m-1", text="A summary.")
    stored_hash = item.content_hash

    edit(admin_mfa_client, item, priority=3)

    assert item.content_hash == stored_hash
    assert client.post(url, [{"prompt": "Summarise"}], format="json").json()["created"] == 0


def test_a_staff_member_without_rights_on_responses_adds_items_with_their_hash(client):
    """Without permissions on responses the page has no responses' inline: the item form
    settles the hash, over no responses, and a second item of the campaign is stored."""
    staff = UserFactory(role=User.Role.ADMIN, is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="feedback",
            codename__in=["add_item", "change_item", "view_item", "view_campaign"],
        )
    )
    totp_turn_on(staff)
    client.force_login(staff)
    campaign = CampaignFactory(overlap=1)
    for prompt in ("First", "Second"):
        page = client.post(ADD, form(campaign.pk, prompt=prompt, priority=0, responses=[]))
        assert page.status_code == 302, page.content.decode()[:3000]
    items = Item.objects.filter(campaign=campaign).order_by("pk")
    assert [i.content_hash for i in items] == [_hash_of(i) for i in items]

    page = client.post(ADD, form(campaign.pk, prompt="First", priority=0, responses=[]))
    assert page.status_code == 200
    assert f"Item {items[0].pk} of this campaign has the same prompt" in page.content.decode()
    assert items.count() == 2


def test_response_images_that_are_not_stored_images_are_a_form_error(admin_mfa_client):
    campaign = CampaignFactory(overlap=1)
    data = form(campaign.pk, prompt="Which?", priority=0, responses=["A", "B"])
    data["responses-1-images"] = "[7]"
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 200
    assert "The images of response &#x27;model-1&#x27; must be a list of stored images" in (
        page.content.decode()
    )
    assert not Item.objects.filter(campaign=campaign).exists()


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        (
            "prompt",
            '[{"role": "user", "content": "Look", "images": ["data:image/png;base64,AAAA"]}]',
            "prompt[0].images: must be a list of stored images ({&quot;id&quot;: &lt;image id&gt;})",
        ),
        ("prompt", '[{"content": "Who speaks?"}]', "prompt[0].role: must be one of"),
        ("prompt", '"   "', "prompt: must not be empty"),
        (
            "context",
            '{"images": ["upload:chart.png"]}',
            "images: must be a list of stored images",
        ),
        ("context", '{"images": [{"id": true}]}', "images: must be a list of stored images"),
    ],
)
def test_a_prompt_or_context_the_api_would_refuse_is_a_form_error(
    admin_mfa_client, field, value, said
):
    """The review page and generation read what the admin saves as they read the API's."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    data = form(campaign.pk, prompt="Fine", priority=0, responses=["A"])
    data[field] = value
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 200
    assert said in page.content.decode()
    assert not Item.objects.filter(campaign=campaign).exists()


def test_context_and_metadata_left_blank_are_empty_objects_and_others_are_errors(
    admin_mfa_client,
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    data = form(campaign.pk, prompt="Blank", priority=0, responses=["A"])
    data |= {"context": "", "metadata": ""}
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 302, page.content.decode()[:3000]
    item = Item.objects.get(campaign=campaign)
    assert (item.context, item.metadata) == ({}, {})

    data = form(campaign.pk, prompt="List", priority=0, responses=["A"])
    data |= {"context": "[1]"}
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 200
    assert "Must be a JSON object." in page.content.decode()
    assert Item.objects.filter(campaign=campaign).count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", '{"a": "x\\u0000"}'),
        ("context", '{"a": "x\\ud800"}'),
        ("prompt", '"x\\ud800"'),
        ("responses-0-images", '[{"id": 1, "k": "\\u0000"}]'),
        ("responses-0-generation", '{"k": "\\ud800"}'),
    ],
)
def test_json_that_postgresql_cannot_store_is_a_form_error(admin_mfa_client, field, value):
    campaign = CampaignFactory(overlap=1)
    data = form(campaign.pk, prompt="Stored?", priority=0, responses=["A"]) | {field: value}
    page = admin_mfa_client.post(ADD, data)
    assert page.status_code == 200
    assert "cannot be stored." in page.content.decode()
    assert not Item.objects.filter(campaign=campaign).exists()


def test_a_lone_carriage_return_in_a_stored_text_survives_a_save(
    admin_mfa_client, api_for, engineer, pairwise_campaign
):
    """The page shows a lone CR as a line break, which the browser sends back as CRLF."""
    url = f"/api/v1/campaigns/{pairwise_campaign.pk}/items/"
    sent = {
        "prompt": "CR",
        "responses": [{"model": "a", "text": "x\ry"}, {"model": "b", "text": "z"}],
    }
    assert api_for(engineer).post(url, [sent], format="json").json()["created"] == 1
    item = Item.objects.get(campaign=pairwise_campaign)
    stored_hash = item.content_hash
    edit(admin_mfa_client, item, priority=2, **{"responses-0-text": "x\r\ny"})
    assert item.responses.get(model_name="a").text == "x\ry"
    assert item.content_hash == stored_hash


def test_a_gold_answer_that_could_not_be_checked_is_a_form_error(admin_mfa_client):
    campaign = CampaignFactory(kind="pairwise")
    item = ItemFactory(campaign=campaign)
    data = form(campaign.pk, prompt=item.prompt, priority=0, responses=["A", "B"])

    page = admin_mfa_client.post(ADD, data | {"is_gold": "on", "gold_answer": '{"chosen": 0}'})

    assert page.status_code == 200
    assert "must be {&quot;chosen_position&quot;: 0 or 1}" in page.content.decode()
    assert Item.objects.count() == 1


def test_an_item_added_while_an_import_writes_into_its_campaign_is_a_form_error(
    admin_mfa_client, settings
):
    """The admin waits for the campaign's intake lock as a batch does, INTAKE_LOCK_WAIT_SECONDS
    and no longer (an import holds it for as long as it runs; gunicorn would kill the worker
    first), then says so on the form. A second PostgreSQL session plays the import."""
    from feedback.models import ImportJob

    settings.INTAKE_LOCK_WAIT_SECONDS = 1
    campaign = CampaignFactory(overlap=2)
    running = ImportJob.objects.create(
        campaign=campaign,
        created_by=UserFactory(role=User.Role.ENGINEER),
        format="jsonl",
        status="running",
    )
    with intake_held_elsewhere(campaign.pk) as import_runs:
        page = admin_mfa_client.post(
            ADD, form(campaign.pk, prompt="Which is clearer?", priority=5, responses=["A", "B"])
        )
        assert import_runs.is_alive(), "the admin waited for the import to end"
    assert page.status_code == 200
    assert f"Import {running.pk} is writing items into this campaign" in page.content.decode()
    assert not Item.objects.filter(campaign=campaign).exists()


@pytest.mark.parametrize(("kind", "texts"), [("pairwise", ["A"]), ("pairwise", ["A", "B", "C"])])
def test_responses_too_few_or_too_many_for_the_campaign_kind_are_a_form_error(
    admin_mfa_client, kind, texts
):
    """The API refuses them; the admin stored them, and the next claim served a pair of one."""
    campaign = CampaignFactory(kind=kind, overlap=1)

    page = admin_mfa_client.post(
        ADD, form(campaign.pk, prompt="Which?", priority=0, responses=texts)
    )

    assert page.status_code == 200
    assert (
        f"A pairwise campaign needs exactly 2 responses per item (or none, to generate them),"
        f" got {len(texts)}." in page.content.decode()
    )
    assert not Item.objects.filter(campaign=campaign).exists()


@pytest.mark.parametrize("work", ["claimed", "submitted"])
@pytest.mark.parametrize(
    "change",
    [
        {"prompt": '"Another question"'},
        {"responses-0-text": "Another answer"},
        {"responses-0-DELETE": "on"},
        "campaign",
    ],
    ids=["prompt", "response text", "response deleted", "campaign"],
)
def test_an_item_with_a_claim_or_a_review_keeps_its_content_and_campaign(
    admin_mfa_client, work, change
):
    """Its responses deleted under a review, the item went back to the queue through
    generation or an expiry and was over-filled; moved, its claim was submitted into the old
    campaign."""
    campaign = CampaignFactory(kind="rating", overlap=1)
    other = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=1)
    expert = UserFactory(role=User.Role.EXPERT)
    assignment = reviews.assignment_claim(campaign=campaign, expert=expert)
    if work == "submitted":
        reviews.review_submit(
            assignment_id=assignment.pk,
            expert=expert,
            body={"ratings": {str(assignment.response_order[0]): {}}},
        )
    before = (item.prompt, list(item.responses.values_list("pk", "text")), item.campaign_id)
    changes = {"campaign": other.pk} if change == "campaign" else change

    page = _post_edit(admin_mfa_client, item, **changes)

    assert page.status_code == 200
    said = page.content.decode()
    assert f"Item {item.pk} has {1 if work == 'claimed' else 0} live claim" in said
    item.refresh_from_db()
    assert (item.prompt, list(item.responses.values_list("pk", "text")), item.campaign_id) == before
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0


def test_an_item_whose_claim_was_released_may_change_but_not_move(admin_mfa_client):
    campaign = CampaignFactory(kind="rating", overlap=1)
    other = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=1)
    stuck = reviews.assignment_claim(campaign=campaign, expert=UserFactory(role=User.Role.EXPERT))
    assert reviews.assignments_release(assignment_ids=[stuck.pk]) == 1

    moved = _post_edit(admin_mfa_client, item, campaign=other.pk)
    assert moved.status_code == 200
    assert "1 skipped or expired assignment in its campaign" in moved.content.decode()
    edit(admin_mfa_client, item, prompt='"A clearer question"')
    assert (item.prompt, item.campaign_id) == ("A clearer question", campaign.pk)


def test_deleting_an_item_or_campaign_with_work_says_what_work_is_kept(admin_mfa_client):
    """Django said only that the account lacks the permission to delete "assignment"."""
    campaign = CampaignFactory(overlap=2)
    item = ItemFactory(campaign=campaign)
    spare = ItemFactory(campaign=campaign)
    done = reviews.assignment_claim(campaign=campaign, expert=UserFactory())
    _answer(done, done.expert)
    reviews.assignment_claim(campaign=campaign, expert=UserFactory())

    for url in (
        f"/admin/feedback/item/{item.pk}/delete/",
        f"/admin/feedback/campaign/{campaign.pk}/delete/",
    ):
        page = admin_mfa_client.post(url, {"post": "yes"})
        said = page.content.decode()
        assert page.status_code == 200
        assert (
            "2 assignments (1 claimed, 1 submitted): the work experts were given here is kept"
            in said
        )
        assert "permission" not in said
    assert Item.objects.filter(pk=item.pk).exists()

    assert (
        admin_mfa_client.post(
            f"/admin/feedback/item/{spare.pk}/delete/", {"post": "yes"}
        ).status_code
        == 302
    )
    assert not Item.objects.filter(pk=spare.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_claim_made_while_its_item_is_deleted_keeps_the_item(admin_mfa_client):
    """The delete page counts no work; a claim on the item, not yet committed, then holds it.
    The delete waits for that claim and counts again: it is refused, saying so, and the
    claim and its item are kept (the delete went on and failed on the claim's link: a 500)."""
    campaign = CampaignFactory(overlap=1)
    item = ItemFactory(campaign=campaign)
    expert = UserFactory()
    with held_open(lambda: reviews.assignment_claim(campaign=campaign, expert=expert)) as claim:
        delete = Started(
            lambda: admin_mfa_client.post(
                f"/admin/feedback/item/{item.pk}/delete/", {"post": "yes"}
            )
        )
        if not another_session_waits_for_a_lock():
            pytest.fail("the delete did not wait for the claim")

    page = delete.result()
    assert page.status_code == 302
    assert page.url == f"/admin/feedback/item/{item.pk}/change/"
    said = [str(m) for m in get_messages(page.wsgi_request)]
    assert said == [
        "1 assignment (1 claimed): the work experts were given here is kept, so this item"
        " cannot be deleted"
    ]
    assert Item.objects.filter(pk=item.pk).exists()
    assert Assignment.objects.get().pk == claim.pk
