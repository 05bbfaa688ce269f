"""A claim whose lease ran out, marked expired by the periodic job or not yet: the review page
and its submit explain it in words and hand back what the expert wrote."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.models import Response
from reviews import services
from reviews.models import Assignment, Review
from reviews.tasks import expire_leases
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db

RAN_OUT = "Your time on this item ran out"
KEEP_IT = "The item will not come back to you, so copy now anything you want to keep."


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _correction_claim(expert) -> Assignment:
    campaign = CampaignFactory(kind="correction")
    item = ItemFactory(campaign=campaign, responses=0)
    Response.objects.create(item=item, model_name="m", text="The cap is unlimited.")
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment


def _lease_runs_out(assignment: Assignment, *, marked: bool) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    if marked:
        expire_leases()  # the periodic job
        assert Assignment.objects.get(pk=assignment.pk).status == Assignment.Status.EXPIRED


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
def test_it_hands_back_the_unsent_text_on_a_submit_after_the_job_marked_the_claim_expired(
    expert, htmx
):
    assignment = _correction_claim(expert)
    _lease_runs_out(assignment, marked=True)
    res = _client(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {"correction_text": "The cap is 12 months of fees.", "rationale": "Clause 9.2 says so."},
        headers={"HX-Request": "true"} if htmx else {},
    )
    assert res.status_code == 409
    assert "HX-Redirect" not in res
    html = res.content.decode()
    assert RAN_OUT in html
    assert KEEP_IT in html
    assert (
        'id="unsent-correction" readonly rows="8">\nThe cap is 12 months of fees.</textarea>'
        in html
    )
    assert 'id="unsent-rationale" readonly rows="4">\nClause 9.2 says so.</textarea>' in html
    assert not Review.objects.exists()


@pytest.mark.parametrize("marked", [True, False], ids=["marked-expired", "due-not-marked"])
def test_opening_a_claim_whose_lease_ran_out_shows_the_autosaved_draft(expert, marked):
    assignment = _correction_claim(expert)
    client = _client(expert)
    saved = client.post(
        reverse("review-draft", args=[assignment.pk]),
        {"correction_text": "The cap is 12 months of fees.", "rationale": "Clause 9.2 says so."},
    )
    assert saved.status_code == 200
    _lease_runs_out(assignment, marked=marked)

    res = client.get(reverse("review-page", args=[assignment.pk]))  # a reload, a new tab

    assert res.status_code == 200
    html = res.content.decode()
    assert RAN_OUT in html
    assert KEEP_IT in html
    assert (
        'id="unsent-correction" readonly rows="8">\nThe cap is 12 months of fees.</textarea>'
        in html
    )
    assert 'id="unsent-rationale" readonly rows="4">\nClause 9.2 says so.</textarea>' in html
    assert 'id="review-form"' not in html


def test_opening_an_expired_claim_without_a_draft_explains_it_without_text_fields(expert):
    assignment = _correction_claim(expert)
    _lease_runs_out(assignment, marked=True)
    res = _client(expert).get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 200
    html = res.content.decode()
    assert RAN_OUT in html
    assert "unsent-" not in html


def test_opening_a_skipped_item_still_goes_home_with_a_note(expert):
    assignment = _correction_claim(expert)
    services.assignment_skip(assignment_id=assignment.pk, expert=expert, reason="too_long")
    res = _client(expert).get(reverse("review-page", args=[assignment.pk]), follow=True)
    assert res.redirect_chain == [(reverse("home"), 302)]
    assert "That item is no longer yours: it was skipped." in res.content.decode()


def test_another_experts_expired_claim_is_not_found(expert, other_expert):
    assignment = _correction_claim(other_expert)
    _lease_runs_out(assignment, marked=True)
    client = _client(expert)
    assert client.get(reverse("review-page", args=[assignment.pk])).status_code == 404
    res = client.post(reverse("review-submit", args=[assignment.pk]), {"rationale": "x"})
    assert res.status_code == 404
