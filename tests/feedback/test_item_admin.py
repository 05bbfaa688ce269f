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
        data |= {
            f"responses-{n}-model_name": f"model-{n}",
            f"responses-{n}-text": text,
            f"responses-{n}-format": "markdown",
            f"responses-{n}-position": n,
            f"responses-{n}-generation": "{}",
            f"responses-{n}-images": "[]",
            f"responses-{n}-created_at_0": "2026-11-29",
            f"responses-{n}-created_at_1": "10:00:00",
        }
    return data


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
    data = form(campaign.pk, prompt=second.prompt, priority=9, responses=[])
    data |= {"responses-TOTAL_FORMS": 2, "responses-INITIAL_FORMS": 2}
    for n, response in enumerate(second.responses.order_by("position")):
        data |= {
            f"responses-{n}-id": response.pk,
            f"responses-{n}-item": second.pk,
            f"responses-{n}-model_name": response.model_name,
            f"responses-{n}-text": response.text,
            f"responses-{n}-format": response.format,
            f"responses-{n}-position": response.position,
            f"responses-{n}-generation": "{}",
            f"responses-{n}-images": "[]",
            f"responses-{n}-created_at_0": "2026-11-29",
            f"responses-{n}-created_at_1": "10:00:00",
        }
    data["external_id"] = second.external_id
    page = admin_mfa_client.post(f"/admin/feedback/item/{second.pk}/change/", data)
    assert page.status_code == 302, page.content.decode()[:3000]
    second.refresh_from_db()
    assert (second.priority, second.queue.priority, second.queue.open_slots) == (9, 9, 1)

    expert = UserFactory(role=User.Role.EXPERT)
    assignment = reviews.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    assert assignment.item_id == second.pk, "now first by priority"
    assert QueueEntry.objects.get(pk=first.pk).open_slots == 1
