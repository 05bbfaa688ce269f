"""A claim whose lease ran out, marked expired by the periodic job or not yet: the review page
and its submit explain it in words and hand back what the expert wrote."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from reviews import services
from reviews.models import Assignment, Review
from reviews.tasks import expire_leases
from tests.reviews.pages import client_for, correction_claim

pytestmark = pytest.mark.django_db

RAN_OUT = "Your time on this item ran out"
KEEP_IT = "The item will not come back to you, so copy now anything you want to keep."


def _assert_text_handed_back(html: str) -> None:
    """The ran-out page, with the correction and rationale read-only, to copy."""
    assert RAN_OUT in html
    assert KEEP_IT in html
    assert (
        'id="unsent-correction" readonly rows="8">\nThe cap is 12 months of fees.</textarea>'
        in html
    )
    assert 'id="unsent-rationale" readonly rows="4">\nClause 9.2 says so.</textarea>' in html


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
    assignment = correction_claim(expert)
    _lease_runs_out(assignment, marked=True)
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {"correction_text": "The cap is 12 months of fees.", "rationale": "Clause 9.2 says so."},
        headers={"HX-Request": "true"} if htmx else {},
    )
    assert res.status_code == 409
    assert "HX-Redirect" not in res
    html = res.content.decode()
    _assert_text_handed_back(html)
    assert not Review.objects.exists()


@pytest.mark.parametrize("marked", [True, False], ids=["marked-expired", "due-not-marked"])
def test_opening_a_claim_whose_lease_ran_out_shows_the_autosaved_draft(expert, marked):
    assignment = correction_claim(expert)
    client = client_for(expert)
    saved = client.post(
        reverse("review-draft", args=[assignment.pk]),
        {"correction_text": "The cap is 12 months of fees.", "rationale": "Clause 9.2 says so."},
    )
    assert saved.status_code == 200
    _lease_runs_out(assignment, marked=marked)

    res = client.get(reverse("review-page", args=[assignment.pk]))  # a reload, a new tab

    assert res.status_code == 200
    html = res.content.decode()
    _assert_text_handed_back(html)
    assert 'id="review-form"' not in html


def test_opening_an_expired_claim_without_a_draft_explains_it_without_text_fields(expert):
    assignment = correction_claim(expert)
    _lease_runs_out(assignment, marked=True)
    res = client_for(expert).get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 200
    html = res.content.decode()
    assert RAN_OUT in html
    assert "unsent-" not in html


def test_opening_a_skipped_item_still_goes_home_with_a_note(expert):
    assignment = correction_claim(expert)
    services.assignment_skip(assignment_id=assignment.pk, expert=expert, reason="too_long")
    res = client_for(expert).get(reverse("review-page", args=[assignment.pk]), follow=True)
    assert res.redirect_chain == [(reverse("home"), 302)]
    assert "That item is no longer yours: it was skipped." in res.content.decode()


def test_another_experts_expired_claim_is_not_found(expert, other_expert):
    assignment = correction_claim(other_expert)
    _lease_runs_out(assignment, marked=True)
    client = client_for(expert)
    assert client.get(reverse("review-page", args=[assignment.pk])).status_code == 404
    res = client.post(reverse("review-submit", args=[assignment.pk]), {"rationale": "x"})
    assert res.status_code == 404
