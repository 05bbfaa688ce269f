"""What the review page's form and autosave do with values that are not what they look like:
digits int() refuses, and characters PostgreSQL cannot store."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5, "anchors": {}}]
# str.isdigit() says yes to each of these, or int() takes them though a form never should.
NOT_FORM_INTEGERS = ["\u00b2", "\u0663", "1_0", " 2", "--2", "9" * 5000]


def _claim(kind: str, expert, **fields) -> Assignment:
    campaign = CampaignFactory(kind=kind, **fields)
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment


@pytest.mark.parametrize("value", NOT_FORM_INTEGERS)
def test_a_strength_that_is_not_an_ascii_number_is_a_form_error(expert, value):
    assignment = _claim("pairwise", expert)
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {"chosen": str(assignment.response_order[0]), "strength": value, "rationale": "Keep me"},
    )
    assert res.status_code == 400
    html = res.content.decode()
    assert "preference.strength: must be 1, 2 or 3" in html
    assert "Keep me</textarea>" in html
    assert not Review.objects.exists()


@pytest.mark.parametrize("value", NOT_FORM_INTEGERS)
def test_a_score_that_is_not_an_ascii_number_is_a_form_error(expert, value):
    assignment = _claim("rating", expert, rubric=RUBRIC)
    rid = assignment.response_order[0]
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {f"rating-{rid}-accuracy": value},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 422
    assert f"ratings.{rid}.accuracy: must be an integer from 1 to 5" in res.content.decode()
    assert not Review.objects.exists()


@pytest.mark.parametrize("value", NOT_FORM_INTEGERS)
def test_hidden_counts_that_are_not_ascii_numbers_are_left_out(expert, value):
    assignment = _claim("pairwise", expert)
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {
            "chosen": str(assignment.response_order[0]),
            "strength": "2",
            "active_seconds": value,
            "pasted_rationale": value,
            "pasted_correction": "4",
        },
    )
    assert res.status_code == 302
    review = Review.objects.get()
    assert review.strength == 2
    assert review.pasted_chars == {"correction": 4}


def test_ascii_numbers_still_reach_the_review(expert):
    assignment = _claim("rating", expert, rubric=RUBRIC)
    rid = assignment.response_order[0]
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {f"rating-{rid}-accuracy": "4", "active_seconds": "0", "pasted_rationale": "12"},
    )
    assert res.status_code == 302
    review = Review.objects.get()
    assert review.ratings == {str(rid): {"accuracy": 4}}
    assert review.pasted_chars == {"rationale": 12}


@pytest.mark.parametrize("value", NOT_FORM_INTEGERS)
def test_the_page_shows_a_draft_whatever_its_counts_hold(expert, value):
    assignment = _claim("pairwise", expert)
    client = client_for(expert)
    saved = client.post(
        reverse("review-draft", args=[assignment.pk]),
        {
            "active_seconds": value,
            "pasted_rationale": value,
            "strength": value,
            "rationale": "Mine",
        },
    )
    assert saved.status_code == 200
    res = client.get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 200
    html = res.content.decode()
    assert 'name="active_seconds" value="0"' in html
    assert 'name="pasted_rationale" value="0"' in html
    assert ">\nMine</textarea>" in html


def test_a_draft_field_holding_a_nul_is_refused_by_name_and_nothing_is_stored(expert):
    assignment = _claim("pairwise", expert)
    client = client_for(expert)
    first = client.post(reverse("review-draft", args=[assignment.pk]), {"rationale": "ok"})
    assert first.status_code == 200
    res = client.post(
        reverse("review-draft", args=[assignment.pk]),
        {"rationale": "a\x00b", "strength": "2"},
    )
    assert res.status_code == 400
    error = res.json()["error"]
    assert error["fields"] == {
        "rationale": ["contains a NUL character (\\u0000), which cannot be stored"]
    }
    assert error["message"].startswith("The draft was not saved: rationale contains a NUL")
    assignment.refresh_from_db()
    assert assignment.draft["fields"] == {"rationale": ["ok"]}


# A NUL character in a skip note or a review's text is refused by the services
# (ValidationFailed naming the field); the page shows that as its message or form error.
def test_a_nul_in_a_skip_note_is_a_message_on_the_page(expert):
    assignment = _claim("pairwise", expert)
    res = client_for(expert).post(
        reverse("review-skip", args=[assignment.pk]),
        {"reason": "other", "note": "x\x00y"},
        follow=True,
    )
    assert res.redirect_chain == [(reverse("review-page", args=[assignment.pk]), 302)]
    assert '<p class="message error">' in res.content.decode()
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.CLAIMED


def test_a_nul_in_the_rationale_is_a_form_error(expert):
    assignment = _claim("pairwise", expert)
    client = Client(raise_request_exception=False)
    client.force_login(expert)
    page = client.post(
        reverse("review-submit", args=[assignment.pk]),
        {"chosen": str(assignment.response_order[0]), "rationale": "x\x00y"},
        headers={"HX-Request": "true"},
    )
    assert page.status_code == 422
    assert "rationale:" in page.content.decode()
    assert not Review.objects.exists()


def test_a_form_sent_without_the_pages_script_stores_its_line_breaks_as_lf(expert):
    # A browser sends a textarea with CRLF in a plain form post (the page's script and the API
    # send LF): stored so, it went into the SFT rows as "\r\n".
    assignment = _claim("correction", expert, rubric=RUBRIC)
    rid = assignment.response_order[0]
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {
            f"rating-{rid}-accuracy": "4",
            "correction_response": str(rid),
            "correction_text": "Corrected advice\r\nline two\rline three",
            "rationale": "Why:\r\nit was wrong.",
        },
    )

    assert res.status_code == 302
    review = Review.objects.get()
    assert review.correction_text == "Corrected advice\nline two\nline three"
    assert review.rationale == "Why:\nit was wrong."
