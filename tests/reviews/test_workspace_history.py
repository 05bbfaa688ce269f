"""The expert's history of their own reviews, and a lead's list of a campaign's reviews."""

from __future__ import annotations

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.models import User
from reviews import services
from reviews.models import Review
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db


def _review(campaign, expert, rationale: str) -> Review:
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    review, _ = services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}, "rationale": rationale},
    )
    return review


def test_the_history_shows_only_my_reviews_with_the_leads_verdict_and_note(expert, other_expert):
    campaign = CampaignFactory(kind="pairwise", acceptance="lead")
    mine = _review(campaign, expert, "My reasons")
    _review(campaign, other_expert, "Their reasons")
    Review.objects.filter(pk=mine.pk).update(
        verdict="rejected",
        verdict_note="Missed the *indemnity* carve-out.",
        verdict_at=timezone.now(),
    )
    html = client_for(expert).get(reverse("review-history")).content.decode()
    assert "My reasons" in html
    assert "Their reasons" not in html
    assert "Rejected" in html
    assert "Missed the <em>indemnity</em> carve-out." in html
    assert f'id="assignment-{mine.assignment_id}"' in html


def test_the_history_does_not_show_the_engineers_item_ids(expert):
    # An external_id is the pushing team's name for an item, and may say what the expert must
    # not be told (the models compared, "gold-17").
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(campaign=campaign, external_id="gold-gpt-vs-claude-17")
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )
    html = client_for(expert).get(reverse("review-history")).content.decode()
    assert f"item #{assignment.item_id}" in html
    assert "gold-gpt-vs-claude-17" not in html


def test_the_history_asks_for_sign_in():
    res = Client().get(reverse("review-history"))
    assert res.status_code == 302


@pytest.mark.parametrize("role", ["lead", "admin"])
def test_leads_and_admins_read_a_campaigns_reviews_with_rationales(expert, role):
    campaign = CampaignFactory(kind="pairwise")
    _review(campaign, expert, "Response A cites **the statute**.")
    reader = UserFactory(role=role)
    if role == "admin":
        # Admins work with two factors (feedback.mfa_policy); this one has set up TOTP.
        TOTP.activate(reader, generate_totp_secret())
    res = client_for(reader).get(reverse("campaign-reviews", args=[campaign.pk]))
    assert res.status_code == 200
    html = res.content.decode()
    assert "Response A cites <strong>the statute</strong>." in html
    assert expert.email in html


@pytest.mark.parametrize(("role", "shown"), [("lead", False), ("admin", True)])
def test_the_lead_page_names_items_by_number_and_only_admins_by_external_id(expert, role, shown):
    """A lead reviews items too, blind: the external_id an engineer gave may name the models
    compared, or say "gold"."""
    campaign = CampaignFactory(kind="pairwise")
    review = _review(campaign, expert, "Reasons")
    review.item.external_id = "gold-gpt-vs-claude-17"
    review.item.save(update_fields=["external_id"])
    reader = UserFactory(role=role)
    if role == "admin":
        TOTP.activate(reader, generate_totp_secret())

    html = client_for(reader).get(reverse("campaign-reviews", args=[campaign.pk])).content.decode()

    assert f"#{review.item_id}" in html
    assert ("gold-gpt-vs-claude-17" in html) is shown


@pytest.mark.parametrize("role", [User.Role.EXPERT, User.Role.ENGINEER])
def test_an_outsider_to_adjudication_gets_403_on_the_lead_page(expert, role):
    campaign = CampaignFactory(kind="pairwise")
    _review(campaign, expert, "secret reasons")
    outsider = UserFactory(role=role)
    res = client_for(outsider).get(reverse("campaign-reviews", args=[campaign.pk]))
    assert res.status_code == 403
    assert "secret reasons" not in res.content.decode()


def test_the_lead_page_answers_404_for_an_unknown_campaign():
    lead = UserFactory(role=User.Role.LEAD)
    assert client_for(lead).get(reverse("campaign-reviews", args=[987654])).status_code == 404
