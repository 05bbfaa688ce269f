"""An item made or edited in the Django admin has its place in the review queue."""

from __future__ import annotations

import pytest

from feedback.models import Item, QueueEntry, User
from reviews import services as reviews
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.mfa_fixtures import admin_mfa_client_fixture, admin_with_mfa_fixture  # noqa: F401

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


def edit(client, item: Item, *, new_responses: tuple[str, ...] = (), **changes) -> None:
    """Post the change form of a stored item: its fields with `changes`, its responses as
    they are and `new_responses` added."""
    stored = list(item.responses.order_by("position"))
    data = form(
        item.campaign_id,
        prompt=item.prompt,
        priority=changes.pop("priority", item.priority),
        responses=[],
    )
    data |= {"external_id": item.external_id, **changes}
    for n, response in enumerate(stored):
        data |= _response(
            n, model_name=response.model_name, text=response.text, position=response.position
        )
        data |= {f"responses-{n}-id": response.pk, f"responses-{n}-item": item.pk}
    for n, text in enumerate(new_responses, start=len(stored)):
        data |= _response(n, model_name=f"model-{n}", text=text, position=n)
    data |= {
        "responses-TOTAL_FORMS": len(stored) + len(new_responses),
        "responses-INITIAL_FORMS": len(stored),
    }
    page = client.post(f"/admin/feedback/item/{item.pk}/change/", data)
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
    edit(admin_mfa_client, item, is_gold="on", gold_answer='{"chosen": 0}')
    assert item.is_gold
    assert item.queue.open_slots == 0
    assert reviews.assignment_claim(campaign=campaign, expert=UserFactory()) is None


def test_slots_edited_in_the_admin_count_the_live_assignments(admin_mfa_client):
    campaign = CampaignFactory(overlap=3)
    item = ItemFactory(campaign=campaign)
    for _ in range(2):
        assert reviews.assignment_claim(campaign=campaign, expert=UserFactory()) is not None
    edit(admin_mfa_client, item, priority=4)
    assert (item.queue.priority, item.queue.open_slots) == (4, 1)
