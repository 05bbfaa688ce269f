"""A review page whose session has ended: a script's request is told so with 401 instead of
being sent to the sign-in page, whose 200 it would take for success."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from reviews import services
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


def _claim(expert) -> Assignment:
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment


def test_the_autosave_of_a_signed_out_page_gets_401_not_the_sign_in_page(expert):
    assignment = _claim(expert)
    res = Client().post(reverse("review-draft", args=[assignment.pk]), {"rationale": "Mine"})
    assert res.status_code == 401
    error = res.json()["error"]
    assert error["code"] == "not_authenticated"
    assert error["message"].startswith("You are signed out, so nothing was saved.")
    assignment.refresh_from_db()
    assert assignment.draft == {}


@pytest.mark.parametrize("view", ["review-submit", "review-skip"])
def test_an_htmx_post_from_a_signed_out_page_gets_401_not_the_sign_in_page(expert, view):
    assignment = _claim(expert)
    res = Client().post(
        reverse(view, args=[assignment.pk]),
        {"chosen": str(assignment.response_order[0]), "reason": "too_long"},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 401
    assert "HX-Redirect" not in res
    assert res.json()["error"]["code"] == "not_authenticated"
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.CLAIMED


def test_a_signed_out_browser_without_scripts_is_sent_to_sign_in(expert):
    assignment = _claim(expert)
    page = reverse("review-page", args=[assignment.pk])
    res = Client().get(page)
    assert res.status_code == 302
    assert res["Location"] == f"{reverse('account_login')}?next={page}"
    res = Client().post(reverse("review-submit", args=[assignment.pk]), {})
    assert res.status_code == 302
    assert res["Location"].startswith(reverse("account_login"))
