"""The home page: campaigns open to the user, resume or start, and estimated earnings."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from feedback.models import User
from reviews import services
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_lists_my_campaigns_with_pay_progress_instructions_and_a_start_button(expert):
    campaign = CampaignFactory(
        name="Contract clauses",
        kind="correction",
        instructions="Read clause **9.2** first.",
        pay={
            "currency": "USD",
            "per_review": 1500,
            "per_hour": 18000,
            "max_minutes_per_review": 30,
        },
    )
    ItemFactory.create_batch(2, campaign=campaign)
    hidden = CampaignFactory(name="Tax memos", required_skills=["tax"])
    html = _client(expert).get(reverse("home")).content.decode()
    assert "Contract clauses" in html
    assert "Tax memos" not in html
    assert hidden.name not in html
    assert "15.00 USD a review + 180.00 USD an hour of active time (up to 30 min a review)" in html
    assert "0 of 2 reviews done" in html
    assert "Read clause <strong>9.2</strong> first." in html
    assert reverse("review-start", args=[campaign.pk]) in html
    assert "Estimated, before payout" in html


def test_a_live_claim_is_offered_as_resume(expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    html = _client(expert).get(reverse("home")).content.decode()
    assert "Resume your item" in html
    assert reverse("review-page", args=[assignment.pk]) in html


def test_it_shows_accepted_earnings_after_a_review(expert):
    campaign = CampaignFactory(
        kind="pairwise", pay={"currency": "USD", "per_review": 250, "per_hour": 0}
    )
    ItemFactory(campaign=campaign)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0]}},
    )
    html = _client(expert).get(reverse("home")).content.decode()
    assert "<strong>2.50 USD</strong>" in html
    assert "1 review " in html


def test_an_engineer_sees_campaigns_but_no_start_button_or_earnings():
    engineer = UserFactory(role=User.Role.ENGINEER)
    campaign = CampaignFactory(kind="pairwise")
    html = _client(engineer).get(reverse("home")).content.decode()
    assert campaign.name in html
    assert reverse("review-start", args=[campaign.pk]) not in html
    assert "Your earnings" not in html


def test_home_asks_for_sign_in():
    assert Client().get(reverse("home")).status_code == 302


def test_its_query_count_does_not_grow_with_the_number_of_campaigns(
    expert, django_assert_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = _client(expert)
    for _ in range(2):
        ItemFactory(campaign=CampaignFactory())
    with CaptureQueriesContext(connection) as two:
        assert client.get(reverse("home")).status_code == 200
    for _ in range(6):
        ItemFactory(campaign=CampaignFactory())
    with django_assert_num_queries(len(two.captured_queries)):
        html = client.get(reverse("home")).content.decode()
    assert html.count("Start reviewing") >= 8
