"""Rules of the claim at the edges: gold only beside queue work, a paused campaign's live
claim, and assignments released by an admin rather than edited."""

from __future__ import annotations

import pytest

from feedback.models import Campaign, QueueEntry
from reviews import services
from reviews.models import Assignment, Review
from tests.db_stats import moved_past_the_statistics, rows_read
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
)

pytestmark = pytest.mark.django_db


def _answer(assignment: Assignment, expert) -> None:
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )


def test_gold_is_served_beside_queue_work_never_on_its_own(expert, other_expert):
    """At the end of the queue, "nothing left" is final: no gold item now and then."""
    campaign = CampaignFactory(overlap=1, gold_rate=1.0)
    golds = ItemFactory.create_batch(3, campaign=campaign, is_gold=True, open_slots=0)
    item = ItemFactory(campaign=campaign)

    got = []
    while (assignment := services.assignment_claim(campaign=campaign, expert=expert)) is not None:
        got.append(assignment.item_id)
        _answer(assignment, expert)

    # Gold first (the queue still had work for them), then the queue's item, then nothing.
    assert sorted(got[:3]) == sorted(g.pk for g in golds)
    assert got[3:] == [item.pk]
    # The queue is used up: another expert, who has had none of the gold, gets none of it.
    assert [
        services.assignment_claim(campaign=campaign, expert=other_expert) for _ in range(8)
    ] == [None] * 8


def test_a_paused_campaign_gives_back_a_live_claim_and_no_new_work(api_for, expert, other_expert):
    campaign = CampaignFactory(overlap=2)
    ItemFactory(campaign=campaign)
    client = api_for(expert)
    first = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)

    again = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    other = api_for(other_expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")

    assert again.status_code == 200
    assert again.json()["assignment"]["id"] == first.json()["assignment"]["id"]
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "campaign_not_active"


def test_an_admin_releases_a_stuck_claim_and_cannot_edit_or_delete_assignments(
    admin_mfa_client, expert, other_expert
):
    campaign = CampaignFactory(overlap=1)
    item = ItemFactory(campaign=campaign)
    stuck = services.assignment_claim(campaign=campaign, expert=expert)
    assert services.assignment_claim(campaign=campaign, expert=other_expert) is None

    page = admin_mfa_client.post(
        "/admin/reviews/assignment/",
        {"action": "release_claims", "_selected_action": [stuck.pk]},
        follow=True,
    )

    assert "Released 1 of the 1 selected" in page.content.decode()
    assert Assignment.objects.get(pk=stuck.pk).status == "expired"
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 1
    assert services.assignment_claim(campaign=campaign, expert=other_expert).item_id == item.pk
    # Writing an assignment by hand would take or free no slot: the admin only reads them.
    assert admin_mfa_client.get("/admin/reviews/assignment/add/").status_code == 403
    change = admin_mfa_client.get(f"/admin/reviews/assignment/{stuck.pk}/change/")
    assert change.status_code == 200
    assert 'name="status"' not in change.content.decode()
    assert admin_mfa_client.get(f"/admin/reviews/assignment/{stuck.pk}/delete/").status_code == 403


def test_an_admin_reads_reviews_and_cannot_add_or_delete_them(admin_mfa_client, expert):
    """A review added by hand was saved against another assignment's campaign and expert; one
    deleted left its assignment submitted, holding its slot."""
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    review, _ = services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )

    assert admin_mfa_client.get("/admin/reviews/review/").status_code == 200
    assert admin_mfa_client.get(f"/admin/reviews/review/{review.pk}/change/").status_code == 200
    assert admin_mfa_client.get("/admin/reviews/review/add/").status_code == 403
    assert admin_mfa_client.get(f"/admin/reviews/review/{review.pk}/delete/").status_code == 403
    deleted = admin_mfa_client.post(f"/admin/reviews/review/{review.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403
    assert Review.objects.filter(pk=review.pk).exists()


def test_the_release_action_names_what_it_left_alone(admin_mfa_client, expert, other_expert):
    campaign = CampaignFactory(overlap=2)
    ItemFactory(campaign=campaign)
    done = services.assignment_claim(campaign=campaign, expert=expert)
    _answer(done, expert)
    stuck = services.assignment_claim(campaign=campaign, expert=other_expert)

    page = admin_mfa_client.post(
        "/admin/reviews/assignment/",
        {"action": "release_claims", "_selected_action": [done.pk, stuck.pk]},
        follow=True,
    )

    assert (
        f"Released 1 of the 2 selected. Not live claims, left as they are: {done.pk} (submitted)."
        in page.content.decode()
    )
    assert Assignment.objects.get(pk=stuck.pk).status == "expired"


def test_releasing_leaves_what_is_not_a_live_claim_alone(expert):
    campaign = CampaignFactory(overlap=2)
    item = ItemFactory(campaign=campaign)
    done = services.assignment_claim(campaign=campaign, expert=expert)
    _answer(done, expert)
    other = UserFactory(password=None)
    live = services.assignment_claim(campaign=campaign, expert=other)

    assert services.assignments_release(assignment_ids=[done.pk, live.pk]) == 1

    assert Assignment.objects.get(pk=done.pk).status == "submitted"
    assert Assignment.objects.get(pk=live.pk).status == "expired"
    assert QueueEntry.objects.get(pk=item.pk).open_slots == 1


def _eligibility_queries(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if "feedback_expertprofile" in q["sql"] or "feedback_qualification" in q["sql"]
    ]


def test_a_gated_campaign_asks_about_skills_and_qualification_once_per_check(api_for, expert):
    """The campaign lookup and the claim each check the expert against what the campaign
    requires: one query each, skills and qualification together."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from feedback.models import ExpertProfile, Qualification

    campaign = CampaignFactory(required_skills=["law", "tax"], requires_qualification=True)
    ItemFactory(campaign=campaign)
    ExpertProfile.objects.update_or_create(user=expert, defaults={"skills": ["tax", "law", "x"]})
    Qualification.objects.create(campaign=campaign, expert=expert, qualified=True)

    with CaptureQueriesContext(connection) as queries:
        answer = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")

    assert answer.status_code == 200
    asked = _eligibility_queries(queries.captured_queries)
    assert len(asked) == 2, asked
    assert all("feedback_qualification" in sql and "feedback_expertprofile" in sql for sql in asked)


@pytest.mark.parametrize(
    ("skills", "qualified", "refusal"),
    [
        (["law"], True, "The campaign needs the skills: tax."),
        (None, True, "The campaign needs the skills: law, tax."),
        (["law", "tax"], False, "You are not qualified for this campaign yet."),
        (["law", "tax"], None, "You are not qualified for this campaign yet."),
        (["tax", "law"], True, None),
    ],
)
def test_the_claim_refuses_an_expert_short_of_the_campaign_s_requirements(
    expert, skills, qualified, refusal
):
    from feedback.errors import PermissionDenied
    from feedback.models import ExpertProfile, Qualification

    campaign = CampaignFactory(required_skills=["tax", "law"], requires_qualification=True)
    item = ItemFactory(campaign=campaign)
    if skills is None:
        ExpertProfile.objects.filter(user=expert).delete()
    else:
        ExpertProfile.objects.update_or_create(user=expert, defaults={"skills": skills})
    if qualified is not None:
        Qualification.objects.create(campaign=campaign, expert=expert, qualified=qualified)

    if refusal is None:
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert assignment is not None
        assert assignment.item_id == item.pk
        return
    with pytest.raises(PermissionDenied) as refused:
        services.assignment_claim(campaign=campaign, expert=expert)
    assert str(refused.value) == refusal
    assert not Assignment.objects.filter(campaign=campaign).exists()


def test_a_qualification_is_checked_by_index_when_the_statistics_predate_the_campaign(expert):
    """A campaign newer than the table's statistics looks empty to the planner: the claim's
    check of the expert's qualification reads that qualification alone, not every one the
    campaign has granted."""
    from feedback.models import Qualification, User
    from feedback.selectors import unmet_requirements

    campaign = CampaignFactory(requires_qualification=True)
    others = User.objects.bulk_create(
        User(email=f"qualified-{n}@example.test", role=User.Role.EXPERT) for n in range(300)
    )
    Qualification.objects.bulk_create(
        Qualification(campaign=campaign, expert=other) for other in [*others, expert]
    )
    newer = CampaignFactory(requires_qualification=True)
    moved_past_the_statistics(Qualification.objects.filter(campaign=campaign), newer)

    before = rows_read("feedback_qualification")
    assert unmet_requirements(user=expert, campaign=newer) == (set(), False)
    assert rows_read("feedback_qualification") - before == 1
