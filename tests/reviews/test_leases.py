"""Leases: expiry frees slots (lazily and by the beat job), heartbeats extend, late work is 409."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.models import QueueEntry, User
from reviews import services, tasks
from reviews.models import Assignment, Review
from tests.db_stats import moved_past_the_statistics
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db


def _expire(assignment_id: int) -> None:
    Assignment.objects.filter(pk=assignment_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_the_beat_job_expires_a_lease_and_frees_its_slot(expert, other_expert):
    campaign = CampaignFactory(overlap=1)
    item = ItemFactory(campaign=campaign)
    first = services.assignment_claim(campaign=campaign, expert=expert)
    assert services.assignment_claim(campaign=campaign, expert=other_expert) is None
    _expire(first.pk)

    assert tasks.expire_leases() == 1

    item.refresh_from_db()
    assert item.queue.open_slots == 1
    expired = Assignment.objects.get(pk=first.pk)
    assert expired.status == "expired"
    assert expired.finished_at is not None
    again = services.assignment_claim(campaign=campaign, expert=other_expert)
    assert again.item_id == item.pk


def test_the_claim_frees_expired_leases_itself(expert, other_expert):
    campaign = CampaignFactory(overlap=1)
    item = ItemFactory(campaign=campaign)
    first = services.assignment_claim(campaign=campaign, expert=expert)
    _expire(first.pk)

    # No beat job ran: the claim finds the queue dry, expires due leases and tries again.
    claim = services.assignment_claim(campaign=campaign, expert=other_expert)

    assert claim is not None
    assert claim.item_id == item.pk
    assert Assignment.objects.get(pk=first.pk).status == "expired"
    item.refresh_from_db()
    assert item.queue.open_slots == 0


def test_a_late_submit_after_the_slot_was_reassigned_is_409(expert, other_expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    first = services.assignment_claim(campaign=campaign, expert=expert)
    _expire(first.pk)
    second = services.assignment_claim(campaign=campaign, expert=other_expert)
    assert second.item_id == first.item_id

    with pytest.raises(services.Conflict) as raised:
        services.review_submit(
            assignment_id=first.pk,
            expert=expert,
            body={"preference": {"chosen": first.response_order[0], "strength": 1}},
        )

    assert raised.value.status == 409
    assert raised.value.code == "assignment_expired"
    assert Review.objects.count() == 0


def test_an_expert_whose_claim_ran_out_gets_a_fresh_claim_not_the_stale_one(expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory.create_batch(2, campaign=campaign)
    first = services.assignment_claim(campaign=campaign, expert=expert)
    _expire(first.pk)

    second = services.assignment_claim(campaign=campaign, expert=expert)

    assert second.pk != first.pk
    assert second.item_id != first.item_id, "never the same item twice, even after expiry"
    assert Assignment.objects.get(pk=first.pk).status == "expired"


def test_a_heartbeat_extends_the_lease_and_counts_active_time(api_for, expert):
    campaign = CampaignFactory(overlap=1, lease_minutes=10)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    Assignment.objects.filter(pk=assignment.pk).update(
        claimed_at=timezone.now() - timedelta(seconds=300),
        last_seen_at=timezone.now() - timedelta(seconds=30),
        lease_expires_at=timezone.now() + timedelta(seconds=5),
    )

    res = api_for(expert).post(f"/api/v1/assignments/{assignment.pk}/heartbeat/", {}, "json")

    assert res.status_code == 200
    stored = Assignment.objects.get(pk=assignment.pk)
    assert stored.lease_expires_at > timezone.now() + timedelta(minutes=9)
    assert 30 <= stored.observed_seconds <= 32
    # The client claims an hour; the server saw about 30 seconds (and 300 since the claim).
    review, _ = services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}, "active_seconds": 3600},
    )
    assert 30 <= review.active_seconds <= 33


def test_heartbeats_lose_no_time_to_rounding(api_for, expert):
    # Twenty active beats 1.9 s apart: 38 s of work, not twenty whole seconds (each gap's
    # part of a second is carried to the next one, not dropped).
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    api = api_for(expert)
    step = timedelta(seconds=1.9)
    for _ in range(20):
        # 1.9 s pass: everything the claim recorded moves that much into the past.
        Assignment.objects.filter(pk=assignment.pk).update(
            claimed_at=F("claimed_at") - step, last_seen_at=F("last_seen_at") - step
        )
        _beat(api, assignment, active=True)

    assert Assignment.objects.get(pk=assignment.pk).observed_seconds == 38
    res = api.post(
        f"/api/v1/assignments/{assignment.pk}/submit/",
        {"preference": {"chosen": assignment.response_order[0]}, "active_seconds": 38},
        "json",
    )
    assert res.status_code == 201
    assert res.json()["active_seconds"] == 38


def _ago(seconds: int) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def _claimed_ending_soon(expert: User) -> tuple[Assignment, datetime]:
    """The expert's claim on a campaign of 10-minute leases, its lease ending in 5 s."""
    campaign = CampaignFactory(overlap=1, lease_minutes=10)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    ends = timezone.now() + timedelta(seconds=5)
    Assignment.objects.filter(pk=assignment.pk).update(lease_expires_at=ends)
    return assignment, ends


def _beat(api: APIClient, assignment: Assignment, *, active: bool) -> None:
    res = api.post(f"/api/v1/assignments/{assignment.pk}/heartbeat/", {"active": active}, "json")
    assert res.status_code == 200


def _submit_claiming_an_hour(api: APIClient, assignment: Assignment) -> int:
    res = api.post(
        f"/api/v1/assignments/{assignment.pk}/submit/",
        {"preference": {"chosen": assignment.response_order[0]}, "active_seconds": 3600},
        "json",
    )
    assert res.status_code == 201
    active: int = res.json()["active_seconds"]
    assert Assignment.objects.get(pk=assignment.pk).active_seconds == active
    return active


def test_a_page_left_open_and_idle_is_credited_no_active_time(api_for, expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    api = api_for(expert)
    Assignment.objects.filter(pk=assignment.pk).update(claimed_at=_ago(600), last_seen_at=_ago(600))
    # Ten minutes of a tab nobody used: every beat said idle, the last one a minute ago.
    _beat(api, assignment, active=False)
    _beat(api, assignment, active=False)
    Assignment.objects.filter(pk=assignment.pk).update(last_seen_at=_ago(60))

    assert _submit_claiming_an_hour(api, assignment) == 0


# Active: the minute before the first beat, the 30 seconds before the second and the 100 since.
# Idle: the minute before the first beat only.
@pytest.mark.parametrize(("last_beat_active", "credited"), [(True, 60 + 30 + 100), (False, 60)])
def test_the_time_since_the_last_heartbeat_counts_only_when_it_was_active(
    api_for, expert, last_beat_active, credited
):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    api = api_for(expert)
    Assignment.objects.filter(pk=assignment.pk).update(claimed_at=_ago(600), last_seen_at=_ago(60))
    _beat(api, assignment, active=True)  # a minute of work
    Assignment.objects.filter(pk=assignment.pk).update(last_seen_at=_ago(30))
    _beat(api, assignment, active=last_beat_active)
    Assignment.objects.filter(pk=assignment.pk).update(last_seen_at=_ago(100))

    assert credited <= _submit_claiming_an_hour(api, assignment) <= credited + 2


def test_a_client_that_sends_no_heartbeats_is_credited_the_time_since_its_claim(api_for, expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    Assignment.objects.filter(pk=assignment.pk).update(claimed_at=_ago(300))

    assert 300 <= _submit_claiming_an_hour(api_for(expert), assignment) <= 302


def test_a_claim_whose_beats_a_server_before_last_beat_active_counted_keeps_that_reading(
    api_for, expert
):
    # Heartbeat time but no record of the last beat: counted by the previous release, which
    # took the last beat as active. Not the whole time since the claim.
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    Assignment.objects.filter(pk=assignment.pk).update(
        claimed_at=_ago(600), last_seen_at=_ago(100), observed_seconds=90, last_beat_active=None
    )

    assert 190 <= _submit_claiming_an_hour(api_for(expert), assignment) <= 192


def test_an_idle_heartbeat_does_not_extend_the_lease(api_for, expert):
    assignment, ends = _claimed_ending_soon(expert)

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/heartbeat/", {"active": False}, "json"
    )

    assert res.status_code == 200
    assert Assignment.objects.get(pk=assignment.pk).lease_expires_at == ends
    assert res.json()["lease_expires_at"] == ends.isoformat()


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("heartbeat", {"activ": False}, "activ"),
        ("heartbeat", {"active": False, "idle": True}, "idle"),
        ("skip", {"reason": "other", "notes": "conflict"}, "notes"),
    ],
)
def test_a_heartbeat_or_skip_with_a_field_it_does_not_know_is_a_400_naming_it(
    api_for, expert, action, body, field
):
    """A misspelt `active` was read as the default, an active beat: the lease grew and the
    time was counted as work while the client meant idle."""
    assignment, ends = _claimed_ending_soon(expert)
    before = Assignment.objects.get(pk=assignment.pk)

    res = api_for(expert).post(f"/api/v1/assignments/{assignment.pk}/{action}/", body, "json")

    assert res.status_code == 400, res.json()
    error = res.json()["error"]
    assert error["fields"] == {field: [f"is not a field of a {action}"]}
    after = Assignment.objects.get(pk=assignment.pk)
    assert (after.status, after.lease_expires_at, after.observed_seconds) == (
        "claimed",
        ends,
        before.observed_seconds,
    )
    assert after.last_seen_at == before.last_seen_at


@pytest.mark.parametrize(
    ("action", "body", "bad_value"),
    [
        ("heartbeat", {"activ": False, "active": "yes"}, "active"),
        ("skip", {"reason": "bogus", "notes": "conflict"}, "reason"),
    ],
)
def test_a_field_it_does_not_know_is_named_beside_the_bad_values(
    api_for, expert, action, body, bad_value
):
    """One answer names every problem, as a submit's does, not the bad value first and the
    misspelt field only once that is mended."""
    assignment, _ends = _claimed_ending_soon(expert)

    res = api_for(expert).post(f"/api/v1/assignments/{assignment.pk}/{action}/", body, "json")

    assert res.status_code == 400, res.json()
    fields = res.json()["error"]["fields"]
    unknown = next(name for name in body if name not in {"active", "reason"})
    assert fields[unknown] == [f"is not a field of a {action}"]
    assert set(fields) == {unknown, bad_value}
    assert Assignment.objects.get(pk=assignment.pk).status == "claimed"


@pytest.mark.parametrize("active", ["yes", "on", 1, 0, "1", "t", "F", []])
def test_a_heartbeat_whose_active_is_not_true_or_false_is_a_400_and_changes_nothing(
    api_for, expert, active
):
    """DRF's boolean took "yes", "on" and 1 as true: a client sending those has sent the wrong
    thing, and an item's `is_gold` is refused the same way."""
    assignment, ends = _claimed_ending_soon(expert)
    before = Assignment.objects.get(pk=assignment.pk)

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/heartbeat/", {"active": active}, "json"
    )

    assert res.status_code == 400, res.json()
    assert res.json()["error"]["fields"] == {"active": ["Must be true or false."]}
    after = Assignment.objects.get(pk=assignment.pk)
    assert (after.lease_expires_at, after.last_seen_at, after.observed_seconds) == (
        ends,
        before.last_seen_at,
        before.observed_seconds,
    )


# Python's requests writes False as "False" in a form.
@pytest.mark.parametrize(
    ("active", "extended"), [("false", False), ("true", True), ("False", False), ("True", True)]
)
def test_a_form_encoded_heartbeat_says_true_or_false_in_words(api_for, expert, active, extended):
    assignment, ends = _claimed_ending_soon(expert)

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/heartbeat/", {"active": active}
    )

    assert res.status_code == 200, res.json()
    assert (Assignment.objects.get(pk=assignment.pk).lease_expires_at > ends) is extended


def test_a_heartbeat_on_an_expired_lease_is_409(api_for, expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    _expire(assignment.pk)

    res = api_for(expert).post(f"/api/v1/assignments/{assignment.pk}/heartbeat/", {}, "json")

    assert res.status_code == 409
    assert res.json()["error"]["code"] == "lease_expired"


def test_an_outsider_cannot_heartbeat_anothers_assignment(api_for, expert, other_expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    res = api_for(other_expert).post(f"/api/v1/assignments/{assignment.pk}/heartbeat/", {}, "json")

    assert res.status_code == 404


def test_the_lease_length_is_the_campaigns(expert):
    campaign = CampaignFactory(overlap=1, lease_minutes=7)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment.lease_expires_at - assignment.claimed_at == timedelta(minutes=7)
    assert QueueEntry.objects.get().open_slots == 0


def test_a_skip_with_a_free_text_reason_is_stored_and_the_item_not_offered_again(expert):
    campaign = CampaignFactory(overlap=2)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    with pytest.raises(services.ValidationFailed):
        services.assignment_skip(assignment_id=assignment.pk, expert=expert, reason="other")
    services.assignment_skip(
        assignment_id=assignment.pk, expert=expert, reason="other", note="I wrote this code"
    )

    stored = Assignment.objects.get(pk=assignment.pk)
    assert (stored.status, stored.skip_reason, stored.skip_note) == (
        "skipped",
        "other",
        "I wrote this code",
    )
    assert QueueEntry.objects.get().open_slots == 2
    assert services.assignment_claim(campaign=campaign, expert=expert) is None


def test_a_repeated_skip_answers_the_same_and_one_that_says_otherwise_is_409(api_for, expert):
    campaign = CampaignFactory(overlap=2)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    url = f"/api/v1/assignments/{assignment.pk}/skip/"
    client = api_for(expert)

    assert client.post(url, {"reason": "too_long"}, "json").status_code == 200
    assert client.post(url, {"reason": "too_long"}, "json").status_code == 200
    other = client.post(url, {"reason": "broken_item", "note": "cut off"}, "json")

    assert other.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "already_skipped"
    assert error["fields"] == {
        "reason": ["differs from the skip already made"],
        "note": ["differs from the skip already made"],
    }
    stored = Assignment.objects.get(pk=assignment.pk)
    assert (stored.skip_reason, stored.skip_note) == ("too_long", "")
    assert QueueEntry.objects.get().open_slots == 2, "one slot back, once"


def test_an_unknown_skip_reason_is_told_the_reasons_there_are(api_for, expert):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/skip/", {"reason": "nope"}, "json"
    )

    assert res.status_code == 400
    (message,) = res.json()["error"]["fields"]["reason"]
    assert message.startswith('"nope" is not a skip reason; one of: ')
    assert all(reason in message for reason in services.SKIP_REASONS)
    assert Assignment.objects.get(pk=assignment.pk).status == "claimed"


@pytest.mark.parametrize(
    ("body", "start"),
    [({}, "is required: one of "), ({"reason": None}, "must be one of ")],
    ids=["left out", "null"],
)
def test_a_skip_without_a_reason_is_told_the_reasons_there_are(api_for, expert, body, start):
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    res = api_for(expert).post(f"/api/v1/assignments/{assignment.pk}/skip/", body, "json")

    assert res.status_code == 400
    (message,) = res.json()["error"]["fields"]["reason"]
    assert message.startswith(start)
    assert all(reason in message for reason in services.SKIP_REASONS)
    assert Assignment.objects.get(pk=assignment.pk).status == "claimed"


def test_a_skip_note_over_2000_characters_is_refused_on_the_page_too(expert):
    """The page's skip cut the note to 2,000 characters without a word, where the API
    refuses it."""
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    page = client_for(expert).post(
        reverse("review-skip", args=[assignment.pk]),
        {"reason": "other", "note": "x" * 2001},
        follow=True,
    )

    assert "The note is longer than 2,000 characters." in page.content.decode()
    stored = Assignment.objects.get(pk=assignment.pk)
    assert (stored.status, stored.skip_note) == ("claimed", "")
    ok = services.assignment_skip(
        assignment_id=assignment.pk, expert=expert, reason="other", note="y" * 2000
    )
    assert ok.skip_note == "y" * 2000


def test_a_preference_without_its_choice_is_told_it_is_required(api_for, expert):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)

    res = api_for(expert).post(
        f"/api/v1/assignments/{assignment.pk}/submit/", {"preference": {"strength": 2}}, "json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "preference.chosen": ["is required: the id of one of the item's responses"]
    }
    assert not Review.objects.exists()


def test_priority_wins_then_items_with_reviews_are_finished_first():
    campaign = CampaignFactory(overlap=2)
    low = ItemFactory(campaign=campaign, priority=0)
    started = ItemFactory(campaign=campaign, priority=0)
    urgent = ItemFactory(campaign=campaign, priority=5)
    experts = [UserFactory(role=User.Role.EXPERT) for _ in range(3)]

    first = services.assignment_claim(campaign=campaign, expert=experts[0])
    assert first.item_id == urgent.pk
    QueueEntry.objects.filter(pk=started.pk).update(open_slots=1, started=True)  # one review in

    second = services.assignment_claim(campaign=campaign, expert=experts[1])
    assert second.item_id == urgent.pk, "priority first"
    third = services.assignment_claim(campaign=campaign, expert=experts[2])
    assert third.item_id == started.pk, "then breadth-first, before the untouched item"
    assert low.pk not in {first.item_id, second.item_id, third.item_id}


def test_gold_items_are_interleaved_and_take_no_slot(expert):
    # Every claim draws gold while queue work is left, so the gold item comes first.
    campaign = CampaignFactory(overlap=1, gold_rate=1.0)
    gold = ItemFactory(campaign=campaign, is_gold=True, open_slots=0)
    ItemFactory.create_batch(6, campaign=campaign)

    got = []
    while (assignment := services.assignment_claim(campaign=campaign, expert=expert)) is not None:
        got.append((assignment.item_id, assignment.is_gold))
        services.review_submit(
            assignment_id=assignment.pk,
            expert=expert,
            body={"preference": {"chosen": assignment.response_order[0]}},
        )

    assert len(got) == 7
    assert got[0] == (gold.pk, True), "the gold item once, flagged as gold"
    assert all(not is_gold for _, is_gold in got[1:])
    gold.refresh_from_db()
    assert gold.queue.open_slots == 0


def test_gold_items_come_at_about_the_campaigns_gold_rate(expert):
    campaign = CampaignFactory(overlap=1, gold_rate=0.2)
    ItemFactory.create_batch(100, campaign=campaign, is_gold=True, open_slots=0)
    ItemFactory.create_batch(400, campaign=campaign)

    gold = 0
    for _ in range(300):
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert assignment is not None
        gold += assignment.is_gold
        services.review_submit(
            assignment_id=assignment.pk,
            expert=expert,
            body={"preference": {"chosen": assignment.response_order[0]}},
        )

    # 60 expected of 300 at 0.2 (standard deviation about 7): 30 to 90 holds but for about
    # one run in 100,000; a rate of 0 or 1, or one off by half, does not.
    assert 30 <= gold <= 90, gold


def test_an_unqualified_or_unskilled_expert_cannot_claim(expert, engineer):
    qualified = CampaignFactory(requires_qualification=True)
    ItemFactory(campaign=qualified)
    with pytest.raises(services.PermissionDenied):
        services.assignment_claim(campaign=qualified, expert=expert)
    from feedback.services import qualification_set

    qualification_set(campaign=qualified, expert=expert, qualified=True)
    assert services.assignment_claim(campaign=qualified, expert=expert) is not None

    skilled = CampaignFactory(required_skills=["tax-law"])
    ItemFactory(campaign=skilled)
    with pytest.raises(services.PermissionDenied):
        services.assignment_claim(campaign=skilled, expert=expert)
    tax_lawyer = UserFactory(role=User.Role.EXPERT, profile=["tax-law", "contracts"])
    assert services.assignment_claim(campaign=skilled, expert=tax_lawyer) is not None
    with pytest.raises(services.PermissionDenied):
        services.assignment_claim(campaign=skilled, expert=engineer)


def test_each_assignment_stores_its_own_shuffled_response_order():
    campaign = CampaignFactory(kind="ranking", overlap=40)
    item = ItemFactory(campaign=campaign, responses=4)
    ids = sorted(item.responses.values_list("pk", flat=True))
    orders = set()
    for _ in range(40):
        expert = UserFactory(role=User.Role.EXPERT)
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert sorted(assignment.response_order) == ids
        assert Assignment.objects.get(pk=assignment.pk).response_order == (
            assignment.response_order
        )
        orders.add(tuple(assignment.response_order))
    assert len(orders) > 5


def test_an_expert_far_ahead_of_the_others_still_gets_work_at_once():
    """Breadth-first puts started items first; one expert who has many of them is not made to
    walk past them all, and still finds the started items deeper in the queue at the end."""
    from reviews.services import PARTIAL_SCAN

    campaign = CampaignFactory(overlap=2)
    ItemFactory.create_batch(PARTIAL_SCAN + 5, campaign=campaign)
    fast, slow = UserFactory(role=User.Role.EXPERT), UserFactory(role=User.Role.EXPERT)
    seen = set()
    while (assignment := services.assignment_claim(campaign=campaign, expert=fast)) is not None:
        seen.add(assignment.item_id)
        services.review_submit(
            assignment_id=assignment.pk,
            expert=fast,
            body={"preference": {"chosen": assignment.response_order[0]}},
        )
    assert len(seen) == PARTIAL_SCAN + 5, "the fast expert reviewed every item once"
    done = 0
    while (assignment := services.assignment_claim(campaign=campaign, expert=slow)) is not None:
        done += 1
        services.review_submit(
            assignment_id=assignment.pk,
            expert=slow,
            body={"preference": {"chosen": assignment.response_order[0]}},
        )
    assert done == PARTIAL_SCAN + 5
    assert set(QueueEntry.objects.values_list("open_slots", flat=True)) == {0}


def test_a_started_item_past_the_first_looked_at_comes_before_a_fresh_one_of_lower_priority():
    """An expert who has had every one of the first started items looked at (PARTIAL_SCAN) is
    given a fresh item instead of walking past them, but never one of lower priority than a
    started item further on that they have not had."""
    from reviews.services import PARTIAL_SCAN

    campaign = CampaignFactory(overlap=2)
    wanted = ItemFactory(campaign=campaign, priority=10)
    first = UserFactory(role=User.Role.EXPERT)
    assert services.assignment_claim(campaign=campaign, expert=first).item_id == wanted.pk
    had = ItemFactory.create_batch(PARTIAL_SCAN + 1, campaign=campaign, priority=11)
    ItemFactory(campaign=campaign, priority=0)  # fresh, lowest
    far_ahead = UserFactory(role=User.Role.EXPERT)
    for item in had:  # all started, none open to far_ahead: they skipped every one
        assignment = services.assignment_claim(campaign=campaign, expert=far_ahead)
        assert assignment.item_id == item.pk
        services.assignment_skip(
            assignment_id=assignment.pk, expert=far_ahead, reason="outside_expertise"
        )

    assignment = services.assignment_claim(campaign=campaign, expert=far_ahead)

    assert assignment is not None
    assert assignment.item_id == wanted.pk


def _claim_params(campaign) -> dict:
    """The claim statement's parameters for a new expert of the campaign."""
    now = timezone.now()
    return {
        "campaign": campaign.pk,
        "expert": UserFactory(role=User.Role.EXPERT).pk,
        "now": now,
        "lease": now + timedelta(minutes=30),
        "gold": False,
        "scan": services.PARTIAL_SCAN,
        "candidates": services.CANDIDATES,
    }


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_the_priority_floor_bounds_the_fresh_items_read_not_filters_them():
    """With no started candidate, a fresh item below the floor is left for the wider search;
    the floor is one value for the statement, so the scan of fresh items stops at it instead
    of reading every fresh item of the campaign to reject each."""
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (FORMAT JSON) " + services._CLAIM_QUEUE_SQL, _claim_params(campaign)
        )
        plan = cursor.fetchone()[0]

    fresh_scans = [
        node for node in _plan_nodes(plan[0]["Plan"]) if node.get("Index Name") == "queue_fresh_idx"
    ]
    assert fresh_scans, json.dumps(plan)
    for scan in fresh_scans:
        assert "priority >=" in scan["Index Cond"], scan
        assert "priority" not in scan.get("Filter", ""), scan


def test_a_claim_reads_the_queue_rows_of_its_candidates_in_order_until_one_is_free():
    """The candidates (started and fresh) are put in order first, then their queue rows read
    and locked one at a time: with none held, one row is read, not every candidate's."""
    campaign = CampaignFactory(overlap=3)
    items = ItemFactory.create_batch(2 * services.CANDIDATES + 2, campaign=campaign)
    # Started items (as after others' claims), none had by the claimer below.
    started = [item.pk for item in items[: services.CANDIDATES + 1]]
    QueueEntry.objects.filter(item_id__in=started).update(started=True, open_slots=2)
    params = _claim_params(campaign)

    with transaction.atomic(), connection.cursor() as cursor:
        # The plan every connection keeps once it prepares the claim (feedback/settings.py).
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + services._CLAIM_QUEUE_SQL, params)
        plan = cursor.fetchone()[0]
        transaction.set_rollback(True)
    (lock,) = [n for n in _plan_nodes(plan[0]["Plan"]) if n["Node Type"] == "LockRows"]
    candidates = [n for n in _plan_nodes(lock) if n["Node Type"] in {"Append", "Merge Append"}]
    reads = [
        n
        for n in _plan_nodes(lock)
        if n.get("Index Name") == "feedback_queueentry_pkey" and n.get("Alias") == "q"
    ]
    assert [n["Actual Rows"] for n in candidates] == [2 * services.CANDIDATES], plan
    assert [n["Actual Loops"] for n in reads] == [1], plan
    assert lock["Actual Rows"] == 1


def _rows_read_from_assignments(plan: dict) -> list[int]:
    """Rows each scan of the assignments table read: those it returned and those it
    filtered out."""
    return [
        node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        for node in _plan_nodes(plan["Plan"])
        if node.get("Relation Name") == "reviews_assignment"
    ]


def test_live_claims_are_looked_up_by_index_when_the_statistics_predate_the_campaign(expert):
    """A campaign newer than the table's statistics looks empty to the planner (autovacuum
    analyzes the table after a tenth of it has changed): any index that starts with the
    campaign then looks as good as another for its live claims. Each such index bounds the
    lookup by the campaign's live claims, not by every assignment it has had."""
    campaign = CampaignFactory(overlap=1)
    items = ItemFactory.create_batch(20, campaign=campaign)
    experts = UserFactory.create_batch(10)
    Assignment.objects.bulk_create(
        Assignment(
            campaign=campaign,
            item=item,
            expert=reviewer,
            status=Assignment.Status.SUBMITTED,
            lease_expires_at=timezone.now(),
        )
        for item in items
        for reviewer in experts
    )
    newer = CampaignFactory(overlap=1)
    moved_past_the_statistics(Assignment.objects.filter(campaign=campaign), newer)
    ItemFactory(campaign=newer)
    mine = services.assignment_claim(campaign=newer, expert=expert)
    assert mine is not None

    # Django's own queries of a live claim in a campaign (the check that an image belongs to
    # the expert's live claim, a paused campaign's live claim): sent with their values, so
    # planned for them.
    live = Assignment.objects.filter(
        campaign=newer,
        expert=expert,
        status=Assignment.Status.CLAIMED,
        lease_expires_at__gt=timezone.now(),
    )
    (plan,) = json.loads(live.explain(format="json", analyze=True))
    assert _rows_read_from_assignments(plan) == [1], plan

    # The claim as a connection without prepared statements runs it (DB_PREPARED_STATEMENTS=0,
    # docs/configuration.md): planned for each call's values. Its own live claim is found.
    params = _claim_params(newer) | {"expert": expert.pk}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + services._CLAIM_QUEUE_SQL, params)
        (claim_plan,) = cursor.fetchone()[0]
        transaction.set_rollback(True)
    (own,) = [
        node for node in _plan_nodes(claim_plan["Plan"]) if node.get("Subplan Name") == "CTE own"
    ]
    assert _rows_read_from_assignments({"Plan": own}) == [1], claim_plan
