"""Changing a campaign's overlap never over-fills an item (DESIGN.md invariant 1).

An item's open slots are its overlap less its live (claimed or submitted) assignments, exactly,
whatever order claims, submits, skips, expiries and overlap changes come in; below zero while
a lowered overlap sits under the live assignments, so the slots those give back do not reopen
the item.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback import services as feedback_services
from feedback.models import QueueEntry, User
from reviews import services, tasks
from reviews.models import Assignment
from tests.db_locks import Started, another_session_waits_for_a_lock, held_open
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def _set_overlap(campaign, overlap: int, engineer: User):
    return feedback_services.campaign_update(
        actor=engineer, campaign=campaign, changes={"overlap": overlap}
    )


def _live(item_id: int) -> int:
    return Assignment.objects.filter(
        item_id=item_id, status__in=["claimed", "submitted"], is_gold=False
    ).count()


def _submit(assignment: Assignment, expert: User) -> None:
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )


def test_lowering_then_raising_the_overlap_opens_no_slot_on_a_reviewed_item(engineer):
    campaign = CampaignFactory(kind="pairwise", overlap=3)
    item = ItemFactory(campaign=campaign)
    experts = UserFactory.create_batch(5)
    for expert in experts[:3]:
        _submit(services.assignment_claim(campaign=campaign, expert=expert), expert)

    campaign = _set_overlap(campaign, 1, engineer)
    assert QueueEntry.objects.get(pk=item.pk).open_slots == -2
    campaign = _set_overlap(campaign, 3, engineer)

    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0
    assert [services.assignment_claim(campaign=campaign, expert=e) for e in experts[3:]] == [
        None,
        None,
    ]
    campaign = _set_overlap(campaign, 4, engineer)
    assert services.assignment_claim(campaign=campaign, expert=experts[3]).item_id == item.pk


def test_claims_ending_under_a_lowered_overlap_reopen_the_item_only_up_to_it(engineer):
    campaign = CampaignFactory(kind="pairwise", overlap=3)
    item = ItemFactory(campaign=campaign)
    experts = UserFactory.create_batch(6)
    claims = [services.assignment_claim(campaign=campaign, expert=e) for e in experts[:3]]

    campaign = _set_overlap(campaign, 1, engineer)
    services.assignment_skip(assignment_id=claims[0].pk, expert=experts[0], reason="too_long")
    Assignment.objects.filter(pk=claims[1].pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert tasks.expire_leases() == 1
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 0  # one claim still live
    services.assignment_skip(assignment_id=claims[2].pk, expert=experts[2], reason="too_long")

    assert QueueEntry.objects.get(pk=item.pk).open_slots == 1
    granted = [services.assignment_claim(campaign=campaign, expert=e) for e in experts[3:]]
    assert [a.item_id for a in granted if a is not None] == [item.pk]
    assert _live(item.pk) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            # Claims twice as often as the rest, so items fill up between the other steps.
            st.sampled_from(["claim", "claim", "submit", "skip", "expire", "overlap"]),
            st.integers(min_value=0, max_value=3),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_open_slots_stay_overlap_less_live_assignments_in_any_order(steps):
    """Claims, submits, skips, expiries and overlap changes in any order: an item's open slots
    stay its overlap less its live assignments, a claim is granted only while the item has
    fewer live assignments than its overlap, and no expert gets an item twice."""
    engineer = UserFactory(role=User.Role.ENGINEER, password=None)  # None: no hashing
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    items = ItemFactory.create_batch(2, campaign=campaign)
    experts = UserFactory.create_batch(4, password=None)
    held: dict[int, Assignment] = {}  # expert index -> their live claim
    for action, n in steps:
        expert = experts[n]
        claim = held.get(n)
        if action == "claim":
            live_before = {item.pk: _live(item.pk) for item in items}
            got = services.assignment_claim(campaign=campaign, expert=expert)
            if got is not None and claim is None:
                assert live_before[got.item_id] < campaign.overlap, "an over-filled item was given"
                held[n] = got
        elif action == "overlap":
            campaign = _set_overlap(campaign, n or 1, engineer)
        elif claim is not None:
            del held[n]
            if action == "submit":
                _submit(claim, expert)
            elif action == "skip":
                services.assignment_skip(assignment_id=claim.pk, expert=expert, reason="too_long")
            else:
                Assignment.objects.filter(pk=claim.pk).update(
                    lease_expires_at=timezone.now() - timedelta(seconds=1)
                )
                tasks.expire_leases()
        for item in items:
            entry = QueueEntry.objects.get(pk=item.pk)
            assert entry.open_slots == campaign.overlap - _live(item.pk), (action, n)
    pairs = list(Assignment.objects.filter(campaign=campaign).values_list("expert", "item"))
    assert len(pairs) == len(set(pairs)), "an expert got an item twice"


@pytest.mark.django_db(transaction=True)
def test_an_overlap_change_locks_the_queue_rows_in_item_order():
    """As lease expiry does, so the two cannot deadlock: a single UPDATE locked them in the
    order its plan read them, from a few thousand items on the table's physical order, which
    claims shuffle (an expiry of 150 leases and an overlap change at the same moment
    deadlocked). Here the rows lie in the tables in descending item order, the first item's
    row is held, and the overlap change must wait there having locked no other row."""

    from django.db import DatabaseError, connection, transaction

    engineer = UserFactory(role="engineer", password=None)
    campaign = CampaignFactory(kind="pairwise", overlap=2, created_by=engineer)
    with connection.cursor() as cursor:
        # Items too lie in descending id order (ids given, counting down), so the rows come
        # in that order whichever table the plan reads first.
        cursor.execute(
            "INSERT INTO feedback_item (id, campaign_id, external_id, prompt, context, metadata,"
            " content_hash, priority, is_gold, gold_answer, created_at)"
            " SELECT 1000000 - g, %s, 'e' || g, to_jsonb('p' || g), '{}', '{}', md5(g::text),"
            " 0, false, 'null', now() FROM generate_series(1, 3000) g",
            [campaign.pk],
        )
        cursor.execute(
            "INSERT INTO feedback_response (item_id, model_name, text, format, position, images,"
            " generation, created_at) SELECT i.id, 'm' || k, 't' || k, 'markdown', k, '[]',"
            " '{}', now() FROM feedback_item i, generate_series(0, 1) k"
            " WHERE i.campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute(
            "INSERT INTO feedback_queueentry (item_id, campaign_id, priority, open_slots,"
            " started) SELECT id, campaign_id, 0, 2, false FROM feedback_item"
            " WHERE campaign_id = %s ORDER BY id DESC",
            [campaign.pk],
        )
        cursor.execute("ANALYZE feedback_item, feedback_response, feedback_queueentry")
    first, last = (
        QueueEntry.objects.filter(campaign=campaign)
        .order_by(o)
        .values_list("item_id", flat=True)[0]
        for o in ("item_id", "-item_id")
    )

    def change_the_overlap() -> int:
        # Joined by hashing, as PostgreSQL plans it for a campaign of thousands of items once
        # claims have run (here the plan would depend on the tables' statistics): read so, the
        # rows come in the table's order unless the change asks for item order itself.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_nestloop = off")
            cursor.execute("SET LOCAL enable_mergejoin = off")
            return int(_set_overlap(campaign, 3, engineer).overlap)

    with held_open(lambda: list(QueueEntry.objects.select_for_update().filter(item_id=first))):
        change = Started(change_the_overlap)
        if not another_session_waits_for_a_lock():
            pytest.fail("the overlap change did not wait for the first item's row")
        try:
            with transaction.atomic():
                list(QueueEntry.objects.select_for_update(nowait=True).filter(item_id=last))
            last_was_free = True
        except DatabaseError:
            last_was_free = False

    assert last_was_free, "the overlap change locked the last item's row before the first's"
    assert change.result() == 3
    assert set(
        QueueEntry.objects.filter(campaign=campaign).values_list("open_slots", flat=True)
    ) == {3}
