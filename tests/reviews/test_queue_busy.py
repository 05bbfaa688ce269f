"""A claim made while a longer write holds every open slot (an admin's change of the
campaign's overlap, until it commits) is told to ask again, not that nothing is left."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from feedback import services as feedback_services
from feedback.models import QueueEntry
from reviews import services as reviews_services
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_while_an_overlap_change_holds_the_queue_is_a_503_to_retry(
    api_for, expert, engineer
):
    campaign = CampaignFactory(kind="pairwise", overlap=1, created_by=engineer)
    ItemFactory.create_batch(20, campaign=campaign)
    client = api_for(expert)

    # The real change, its transaction held open as a large campaign's would be.
    with overlap_change_held(engineer, campaign):
        during = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
        page = client_for(expert).post(reverse("review-start", args=[campaign.pk]), follow=True)

    assert during.status_code == 503, during.content
    assert during.json()["error"]["code"] == "queue_busy"
    assert "ask again in a few seconds" in during.json()["error"]["message"]
    assert during["Retry-After"] == "1"
    # The page says so too, not "Nothing left for you … Thank you!".
    assert "ask again in a few seconds" in page.content.decode()
    assert "Nothing left" not in page.content.decode()
    assert not Assignment.objects.exists()
    after = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert after.status_code == 200, after.content


@contextmanager
def write_held(write: Callable[[], None], *, seconds: float = 30) -> Iterator[Callable[[], bool]]:
    """`write` run in a transaction of another thread, held uncommitted until the block ends,
    or `seconds` should that come first (30 s: should the code under test wait for it).
    Yields whether the write is still held: after a call, True means the call answered
    without waiting for it."""
    holding = threading.Event()
    release = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with transaction.atomic():
                write()
                holding.set()
                release.wait(seconds)
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)
            holding.set()
        finally:
            connection.close()

    writer = threading.Thread(target=run)
    writer.start()
    try:
        assert holding.wait(30)
        yield lambda: writer.is_alive() and not release.is_set()
    finally:
        release.set()
        writer.join(30)
    assert not failures, failures


def overlap_change_held(engineer, campaign):
    """The campaign's overlap change (every queue row of it updated), held."""
    return write_held(
        lambda: feedback_services.campaign_update(
            actor=engineer, campaign=campaign, changes={"overlap": campaign.overlap + 1}
        )
    )


def _lease_runs_out(assignment_id: int) -> None:
    Assignment.objects.filter(pk=assignment_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.parametrize("whose", ["another_experts", "the_claimers_own"])
def test_a_due_lease_does_not_make_a_claim_wait_for_an_overlap_change(
    api_for, expert, engineer, django_user_model, whose
):
    """Ending a due lease gives its slot back to a queue row the change holds: the claim gives
    up on it (the lease is left for later) and answers 503 to ask again, at once, not after
    the change. The claimer's own lease must end before they get another, so theirs is a
    503 as well."""
    campaign = CampaignFactory(kind="pairwise", overlap=1, created_by=engineer)
    ItemFactory.create_batch(5, campaign=campaign)
    other = django_user_model.objects.create_user(email="other@example.test", role="expert")
    holder = other if whose == "another_experts" else expert
    held = api_for(holder).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    _lease_runs_out(held["assignment"]["id"])

    with overlap_change_held(engineer, campaign) as still_held:
        during = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")
        answered_while_held = still_held()

    assert answered_while_held, "the claim waited for the change to commit"
    assert during.status_code == 503, during.content
    assert during.json()["error"]["code"] == "queue_busy"
    assert Assignment.objects.get().status == "claimed", "the lease is left for later"
    after = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert after.status_code == 200, after.content
    if whose == "another_experts":
        reviews_services.assignments_expire_due()  # the beat job's run
    assert Assignment.objects.get(pk=held["assignment"]["id"]).status == "expired"


def test_a_skip_while_an_overlap_change_holds_its_queue_row_is_a_503_and_saves_nothing(
    api_for, expert, engineer
):
    campaign = CampaignFactory(kind="pairwise", overlap=1, created_by=engineer)
    ItemFactory.create_batch(3, campaign=campaign)
    client = api_for(expert)
    claimed = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    skip = f"/api/v1/assignments/{claimed['assignment']['id']}/skip/"

    with overlap_change_held(engineer, campaign) as still_held:
        during = client.post(skip, {"reason": "too_long"}, format="json")
        answered_while_held = still_held()
        page = client_for(expert).post(
            reverse("review-skip", args=[claimed["assignment"]["id"]]), {"reason": "too_long"}
        )

    assert answered_while_held, "the skip waited for the change to commit"
    assert during.status_code == 503, during.content
    assert during.json()["error"]["code"] == "queue_busy"
    assert during["Retry-After"] == "1"
    # The page goes back to the item, still the expert's, saying to skip again.
    assert page.status_code == 302
    assert page["Location"] == reverse("review-page", args=[claimed["assignment"]["id"]])
    said = [m.message for m in get_messages(page.wsgi_request)]
    assert any("Skip again in a few seconds" in m for m in said), said
    assert Assignment.objects.get().status == "claimed", "nothing saved"
    assert client.post(skip, {"reason": "too_long"}, format="json").status_code == 200
    # Its slot went back once, on top of the overlap the change raised to 2.
    assert QueueEntry.objects.get(item_id=claimed["item"]["id"]).open_slots == 2


def expiry_held(assignment_id: int, *, seconds: float):
    """Another process ending the claim (the beat job's sweep, a worker's lazy expiry): the
    real expiry of it, committed `seconds` after it ran, or at the block's end if sooner."""

    def expire() -> None:
        assert reviews_services.assignments_expire_due(assignment_id=assignment_id) == 1

    return write_held(expire, seconds=seconds)


@pytest.mark.parametrize("held", [0.1, 30], ids=["ended-within-the-wait", "held-past-it"])
def test_an_expert_whose_ran_out_claim_another_process_is_ending_is_not_told_nothing_is_left(
    api_for, expert, held
):
    """Their stale claim is being expired elsewhere as they ask for work: that is waited for,
    then they get a fresh claim; still held after the wait, they are told to ask again."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(5, campaign=campaign)
    client = api_for(expert)
    first = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()["assignment"]["id"]
    _lease_runs_out(first)

    with expiry_held(first, seconds=held):
        during = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")

    if held < 1:
        assert during.status_code == 200, during.content
        assert during.json()["assignment"]["id"] != first
        assert Assignment.objects.get(pk=first).status == "expired"
        # Expired once: its slot given back once, by the other process.
        assert sum(QueueEntry.objects.values_list("open_slots", flat=True)) == 4
    else:
        assert during.status_code == 503, during.content
        assert during.json()["error"]["code"] == "queue_busy"
        assert Assignment.objects.count() == 1, "no second claim while the first is not ended"
    after = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert after.status_code == 200, after.content
    assert after.json()["assignment"]["id"] != first
