"""Expiry racing submit: threads with their own PostgreSQL connections."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from feedback.models import Campaign, QueueEntry, User
from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.threads import answer, in_threads

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = 150


def _claims(campaign: Campaign, count: int) -> list[tuple[Assignment, User]]:
    """One claim each for `count` new experts (without password hashing: none signs in)."""
    experts = User.objects.bulk_create(
        User(email=f"expert{n}@example.test", role=User.Role.EXPERT, password="!")
        for n in range(count)
    )
    claims = []
    for expert in experts:
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert assignment is not None
        claims.append((assignment, expert))
    return claims


def test_a_submit_racing_its_leases_expiry_either_stores_the_review_or_frees_the_slot():
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(ATTEMPTS, campaign=campaign)
    claims = _claims(campaign, ATTEMPTS)
    answers: dict[int, str] = {}
    submitted_all = threading.Event()

    def submit_each() -> None:
        try:
            for n, (assignment, expert) in enumerate(claims):
                # The lease ends 0 to 9.8 ms from now: before the submit reads the assignment,
                # between that read and its write, or after the write.
                ends = timezone.now() + timedelta(microseconds=(n % 50) * 200)
                Assignment.objects.filter(pk=assignment.pk).update(lease_expires_at=ends)
                try:
                    services.review_submit(
                        assignment_id=assignment.pk, expert=expert, body=answer(assignment)
                    )
                    answers[assignment.pk] = "stored"
                except services.Conflict as refused:
                    answers[assignment.pk] = refused.code
        finally:
            submitted_all.set()

    def expire_until_all_submitted() -> None:
        while not submitted_all.is_set():
            services.assignments_expire_due(campaign_id=campaign.pk)

    in_threads(2, lambda i: (submit_each, expire_until_all_submitted)[i]())
    # Then the beat job's run, once every lease has ended: a submit refused before the other
    # thread expired its claim leaves it to this one.
    time.sleep(0.01)
    services.assignments_expire_due(campaign_id=campaign.pk, limit=ATTEMPTS)

    reviews = Counter(Review.objects.values_list("assignment_id", flat=True))
    status = dict(Assignment.objects.values_list("pk", "status"))
    open_slots = dict(QueueEntry.objects.values_list("item_id", "open_slots"))
    either = {
        ("stored", "submitted", 1, 0),
        ("lease_expired", "expired", 0, 1),
        ("assignment_expired", "expired", 0, 1),
    }
    # Each: what the submit answered, the assignment's status, its reviews, its item's slots.
    outcomes = [
        (answers[a.pk], status[a.pk], reviews[a.pk], open_slots[a.item_id]) for a, _ in claims
    ]
    assert [outcome for outcome in outcomes if outcome not in either] == []


def test_expiry_passes_over_a_claim_whose_submit_has_not_committed_instead_of_waiting():
    """A claim runs expiry first (lazily), so expiry waiting for a submit would stall claims."""
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(3, campaign=campaign)
    (held, expert), *others = _claims(campaign, 3)
    Assignment.objects.filter(pk__in=[a.pk for a, _ in others]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    ends = timezone.now() + timedelta(minutes=10)
    Assignment.objects.filter(pk=held.pk).update(lease_expires_at=ends)
    row_held, expiry_returned = threading.Event(), threading.Event()
    returned_before_commit: list[bool] = []

    def submit_and_commit_late() -> None:
        with transaction.atomic():
            services.review_submit(assignment_id=held.pk, expert=expert, body=answer(held))
            row_held.set()
            returned_before_commit.append(expiry_returned.wait(timeout=10))

    def expire_once_the_lease_ended() -> None:
        assert row_held.wait(timeout=30)
        # Expiry reads a clock set past the held lease's end instead of waiting for it: however
        # slow the submit, its lease was live when it checked and is over when expiry runs. The
        # submit thread reads no clock meanwhile; it is parked on its event.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(timezone, "now", lambda: ends + timedelta(seconds=1))
            assert services.assignments_expire_due(campaign_id=campaign.pk) == 2
        expiry_returned.set()

    in_threads(2, lambda i: (submit_and_commit_late, expire_once_the_lease_ended)[i]())

    assert returned_before_commit == [True], "expiry waited for the submit's row"
    assert Assignment.objects.get(pk=held.pk).status == "submitted"
    assert Review.objects.filter(assignment=held).count() == 1
    assert QueueEntry.objects.get(item_id=held.item_id).open_slots == 0
    for assignment, _ in others:
        assert Assignment.objects.get(pk=assignment.pk).status == "expired"
        assert QueueEntry.objects.get(item_id=assignment.item_id).open_slots == 1
