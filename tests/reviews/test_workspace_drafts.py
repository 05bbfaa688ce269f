"""Drafts autosave to the server and come back on reload; paste counts reach the review."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import QueryDict
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reviews import services
from reviews.models import Assignment, Review
from reviews.workspace import draft_from_post
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.pages import client_for, correction_claim

pytestmark = pytest.mark.django_db


def test_it_saves_the_form_as_a_draft_and_restores_it_on_reload(expert):
    assignment = correction_claim(expert)
    client = client_for(expert)
    res = client.post(
        reverse("review-draft", args=[assignment.pk]),
        {
            "correction_text": "The cap is 12 months of fees.",
            "rationale": "Clause 9.2 caps it.",
            "flags": ["pii"],
            "active_seconds": "95",
            "pasted_correction": "7",
            "not_a_field": "dropped",
        },
    )
    assert res.status_code == 200
    assert "saved_at" in res.json()
    assignment.refresh_from_db()
    assert assignment.draft["fields"]["correction_text"] == ["The cap is 12 months of fees."]
    assert "not_a_field" not in assignment.draft["fields"]

    html = client.get(reverse("review-page", args=[assignment.pk])).content.decode()
    assert ">\nThe cap is 12 months of fees.</textarea>" in html
    assert ">\nClause 9.2 caps it.</textarea>" in html
    assert 'value="pii" checked' in html
    assert 'name="active_seconds" value="95"' in html
    assert 'name="pasted_correction" value="7"' in html
    assert "Your draft" in html
    # The original stays available for the live diff and the reset button.
    assert ">\nThe cap is unlimited.</textarea>" in html


def test_a_submit_clears_the_draft_and_stores_the_pasted_characters(expert):
    assignment = correction_claim(expert)
    client = client_for(expert)
    client.post(reverse("review-draft", args=[assignment.pk]), {"correction_text": "x"})
    res = client.post(
        reverse("review-submit", args=[assignment.pk]),
        {
            "correction_text": "The cap is 12 months of fees.",
            "rationale": "Pasted from my notes.",
            "pasted_rationale": "21",
            "pasted_correction": "0",
            "active_seconds": "40",
        },
    )
    assert res.status_code == 302
    review = Review.objects.get(assignment=assignment)
    assert review.pasted_chars == {"rationale": 21, "correction": 0}
    assert review.correction_text == "The cap is 12 months of fees."
    assignment.refresh_from_db()
    assert assignment.draft == {}


def test_a_draft_for_an_expired_lease_is_refused_in_words(expert):
    assignment = correction_claim(expert)
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    res = client_for(expert).post(
        reverse("review-draft", args=[assignment.pk]), {"rationale": "late"}
    )
    assert res.status_code == 409
    assert res.json()["error"]["code"] == "lease_expired"
    assignment.refresh_from_db()
    assert assignment.draft == {}


def test_a_draft_over_the_request_limits_is_refused_in_the_apis_format(expert, settings):
    """Django refuses such a body while reading it (the CSRF check reads the form first, as
    for every signed-in POST); the autosave, a script, was answered with an HTML page."""
    assignment = correction_claim(expert)
    url = reverse("review-draft", args=[assignment.pk])
    client = Client(enforce_csrf_checks=True)
    client.force_login(expert)
    client.get(reverse("review-page", args=[assignment.pk]))
    token = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5_000

    many = client.post(url, {f"rating-1-c{i}": "3" for i in range(60)}, **token)
    big = client.post(url, {"rationale": "x" * 6_000}, **token)

    assert (many.status_code, many.json()["error"]["code"]) == (400, "too_many_fields")
    assert "more than 50 form fields" in many.json()["error"]["message"]
    assert (big.status_code, big.json()["error"]["code"]) == (413, "file_too_large")
    assert "5,000 bytes" in big.json()["error"]["message"]
    assignment.refresh_from_db()
    assert assignment.draft == {}


def test_nobody_else_can_read_or_write_an_experts_draft(expert, other_expert):
    assignment = correction_claim(expert)
    client_for(expert).post(reverse("review-draft", args=[assignment.pk]), {"rationale": "mine"})
    other = client_for(other_expert)
    assert (
        other.post(reverse("review-draft", args=[assignment.pk]), {"rationale": "x"}).status_code
        == 404
    )
    assert other.get(reverse("review-page", args=[assignment.pk])).status_code == 404
    assignment.refresh_from_db()
    assert assignment.draft["fields"]["rationale"] == ["mine"]


def test_a_draft_keeps_the_ranking_order_and_the_rubric_scores(expert):
    campaign = CampaignFactory(
        kind="ranking",
        rubric=[{"key": "depth", "label": "Depth", "min": 1, "max": 5, "anchors": {}}],
    )
    ItemFactory(campaign=campaign, responses=3)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    order = list(reversed(assignment.response_order))
    client = client_for(expert)
    client.post(
        reverse("review-draft", args=[assignment.pk]),
        {"ranking": [str(i) for i in order], f"rating-{order[0]}-depth": "4"},
    )
    html = client.get(reverse("review-page", args=[assignment.pk])).content.decode()
    positions = [html.index(f'name="ranking" value="{rid}"') for rid in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("token", "stored"),
    [("1764000000000-ab12cd34", "1764000000000-ab12cd34"), ("x" * 65, None), ("", None)],
)
def test_a_draft_sent_on_leaving_keeps_its_token_for_the_next_page(token, stored):
    """The page compares it with the token it sent (static/js/app.js), to tell whether it was
    made before that draft was stored."""
    post = QueryDict(mutable=True)
    post.update({"rationale": "Why", "draft_token": token})

    draft = draft_from_post(post)

    assert draft.get("token") == stored
    assert "draft_token" not in draft["fields"]
