"""A submit from a stale tab, after the item was submitted or skipped in another: the page says
so in words and hands back what the expert wrote, instead of sending them home with a note
naming the API's fields."""

from __future__ import annotations

import pytest
from django.urls import reverse

from reviews import services
from reviews.models import Review
from tests.reviews.pages import client_for, correction_claim

pytestmark = pytest.mark.django_db

FIRST = {"correction_text": "The cap is 12 months of fees.", "rationale": "Clause 9.2 says so."}
STALE = {"correction_text": "The cap is 24 months of fees.", "rationale": "Read 9.2.1 as well."}
HTMX = {"HX-Request": "true"}


def _assert_stale_text_handed_back(html: str) -> None:
    assert (
        'id="unsent-correction" readonly rows="8">\nThe cap is 24 months of fees.</textarea>'
        in html
    )
    assert 'id="unsent-rationale" readonly rows="4">\nRead 9.2.1 as well.</textarea>' in html


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
def test_another_answer_after_a_submit_is_explained_and_its_text_handed_back(expert, htmx):
    assignment = correction_claim(expert)
    client = client_for(expert)
    url = reverse("review-submit", args=[assignment.pk])
    client.post(url, FIRST, headers=HTMX)
    assert Review.objects.filter(assignment=assignment).exists()

    res = client.post(url, STALE, headers=HTMX if htmx else {})

    assert res.status_code == 409
    assert "HX-Redirect" not in res
    html = res.content.decode()
    assert "This item was already submitted" in html
    assert "from another tab or window with a different answer" in html
    assert "correction.text" not in html
    assert "Your time on this item ran out" not in html
    _assert_stale_text_handed_back(html)
    assert f'href="{reverse("review-history")}#assignment-{assignment.pk}"' in html
    review = Review.objects.get(assignment=assignment)
    assert (review.correction_text, review.rationale) == (
        FIRST["correction_text"],
        FIRST["rationale"],
    )


def test_the_same_answer_sent_again_still_goes_on_to_the_next_item(expert):
    assignment = correction_claim(expert)
    client = client_for(expert)
    url = reverse("review-submit", args=[assignment.pk])
    client.post(url, FIRST, headers=HTMX)

    res = client.post(url, FIRST, headers=HTMX)

    # Nothing else is left in the campaign: home, as after the first submit.
    assert res.status_code == 204
    assert res["HX-Redirect"] == reverse("home")
    assert Review.objects.filter(assignment=assignment).count() == 1


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
def test_an_answer_after_a_skip_is_explained_and_its_text_handed_back(expert, htmx):
    assignment = correction_claim(expert)
    services.assignment_skip(assignment_id=assignment.pk, expert=expert, reason="too_long")

    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]), STALE, headers=HTMX if htmx else {}
    )

    assert res.status_code == 409
    html = res.content.decode()
    assert "This item was skipped" in html
    assert "from another tab or window" in html
    _assert_stale_text_handed_back(html)
    assert not Review.objects.exists()


def test_an_answer_to_an_item_deleted_meanwhile_hands_back_its_text(expert):
    # Without the page's script (a plain form post), the answer to page is the refusal: what
    # was typed is on it, to copy. (With it, the form stays as it was, under a message.)
    assignment = correction_claim(expert)
    assignment.item.delete()  # as the admin's delete does: the claim goes with its item

    res = client_for(expert).post(reverse("review-submit", args=[assignment.pk]), STALE)

    assert res.status_code == 404
    html = res.content.decode()
    assert "What you had written was not saved" in html
    _assert_stale_text_handed_back(html)
