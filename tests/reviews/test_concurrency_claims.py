"""Claims under real concurrency: threads with their own PostgreSQL connections."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from feedback.errors import Busy, Conflict
from feedback.models import QueueEntry, User
from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.reviews.threads import answer, in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_gives_32_concurrent_claimers_every_item_exactly_overlap_times():
    campaign = CampaignFactory(kind="pairwise", overlap=3)
    items = ItemFactory.create_batch(60, campaign=campaign)
    experts = [UserFactory(role=User.Role.EXPERT) for _ in range(32)]

    def work(index: int) -> list[int]:
        expert = User.objects.get(pk=experts[index].pk)
        seen: list[int] = []
        busy = 0
        while True:
            try:
                assignment = services.assignment_claim(campaign=campaign, expert=expert)
            except Busy:
                # "Ask again in a moment" (503 queue_busy), as a client does: the last slots
                # were held by concurrent claims longer than the claim's waits. Now and then,
                # on a loaded host; not as the rule.
                busy += 1
                assert busy <= 20, "503 after 503: the queue is not busy, the claim is"
                time.sleep(0.05)
                continue
            if assignment is None:
                break
            seen.append(assignment.item_id)
            services.review_submit(
                assignment_id=assignment.pk, expert=expert, body=answer(assignment)
            )
        return seen

    per_expert = in_threads(32, work)

    for seen in per_expert:
        assert len(seen) == len(set(seen)), "an expert got the same item twice"
    reviews = list(Review.objects.values_list("item_id", "expert_id"))
    by_item: dict[int, set[int]] = defaultdict(set)
    for item_id, expert_id in reviews:
        by_item[item_id].add(expert_id)
    assert Counter(item_id for item_id, _ in reviews) == {item.pk: 3 for item in items}
    assert all(len(by_item[item.pk]) == 3 for item in items), "3 different experts per item"
    assert set(QueueEntry.objects.values_list("open_slots", flat=True)) == {0}
    assert not Assignment.objects.filter(status="claimed").exists()
    assert Assignment.objects.count() == Review.objects.count() == 180


def test_concurrent_claims_by_one_expert_hold_one_slot():
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(10, campaign=campaign)
    expert = UserFactory(role=User.Role.EXPERT)

    claimed = in_threads(
        8,
        lambda _: (
            services.assignment_claim(campaign=campaign, expert=User.objects.get(pk=expert.pk)).pk
        ),
    )

    assert len(set(claimed)) == 1
    assert Assignment.objects.filter(expert=expert).count() == 1
    assert QueueEntry.objects.filter(open_slots=0).count() == 1


def test_concurrent_claims_by_one_expert_on_the_last_slot_all_get_the_claim():
    # The loser finds the one queue row held by the winner (skipped, never waited for) and
    # nothing else; by the time it gives up, the winner's claim is committed: that is its
    # answer, not "nothing left". Each round races afresh.
    for _ in range(15):
        campaign = CampaignFactory(kind="pairwise", overlap=1)
        ItemFactory(campaign=campaign)
        expert = UserFactory(role=User.Role.EXPERT)

        claimed = in_threads(
            2,
            lambda _, c=campaign, e=expert: getattr(
                services.assignment_claim(campaign=c, expert=User.objects.get(pk=e.pk)),
                "pk",
                None,
            ),
        )

        assert None not in claimed, "an expert holding the last slot was told nothing is left"
        assert len(set(claimed)) == 1


def test_a_double_submit_from_two_threads_stores_one_review():
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign)
    expert = UserFactory(role=User.Role.EXPERT)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None

    outcomes = in_threads(
        6,
        lambda _: services.review_submit(
            assignment_id=assignment.pk,
            expert=User.objects.get(pk=expert.pk),
            body=answer(assignment),
        ),
    )

    assert len({review.pk for review, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 5 + [True]
    assert Review.objects.count() == 1


def test_two_concurrent_submits_with_different_choices_store_one_and_refuse_the_other():
    """Two tabs send different answers at once: one is stored (201) and the other is told
    it was not (409 already_submitted), never 200 as if it had been."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign)
    expert = UserFactory(role=User.Role.EXPERT)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    bodies = [
        {"preference": {"chosen": rid, "strength": 1}} for rid in assignment.response_order[:2]
    ]

    def submit(index: int) -> tuple[int, str]:
        try:
            review, created = services.review_submit(
                assignment_id=assignment.pk,
                expert=User.objects.get(pk=expert.pk),
                body=bodies[index % 2],
            )
        except Conflict as exc:
            return 409, exc.code
        return (201 if created else 200), str(review.chosen_id)

    outcomes = in_threads(6, submit)

    review = Review.objects.get()
    stored = str(review.chosen_id)
    assert [o for o in outcomes if o[0] == 201] == [(201, stored)]
    for index, (status, what) in enumerate(outcomes):
        same = str(bodies[index % 2]["preference"]["chosen"]) == stored
        assert (status, what) in (
            {(201, stored), (200, stored)} if same else {(409, "already_submitted")}
        )


def test_an_expiry_waits_for_an_item_being_made_gold_and_gives_it_no_slot():
    """The expiry reads the item as it is once the admin's change is saved, not as it was
    when the expiry began: otherwise the gold item would get a slot and be served as work."""
    import threading
    import time
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone

    from feedback.models import Item
    from feedback.services import item_queue_sync

    campaign = CampaignFactory(kind="pairwise", overlap=2)
    item = ItemFactory(campaign=campaign)
    claim = services.assignment_claim(campaign=campaign, expert=UserFactory(role=User.Role.EXPERT))
    Assignment.objects.filter(pk=claim.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    saving, expired = threading.Event(), []

    def expire() -> None:
        saving.wait(10)
        try:
            expired.append(services.assignments_expire_due(campaign_id=campaign.pk))
        finally:
            connection.close()

    expiry = threading.Thread(target=expire)
    expiry.start()
    with transaction.atomic():  # the admin's save: the item, then its queue row
        Item.objects.filter(pk=item.pk).update(is_gold=True)
        item_queue_sync(item=Item.objects.get(pk=item.pk))
        saving.set()
        time.sleep(0.5)  # the expiry starts meanwhile, and waits for this to commit
    expiry.join(30)

    assert expired == [1]
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0
