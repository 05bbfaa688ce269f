"""Helpers for the tests of the review pages."""

from __future__ import annotations

from django.test import Client

from feedback.models import Response, User
from reviews import services
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory


def client_for(user: User) -> Client:
    """Django's test client, signed in as `user`."""
    client = Client()
    client.force_login(user)
    return client


def correction_claim(expert: User) -> Assignment:
    """The expert's claim on a correction campaign's item with one response."""
    campaign = CampaignFactory(kind="correction")
    item = ItemFactory(campaign=campaign, responses=0)
    Response.objects.create(item=item, model_name="m", text="The cap is unlimited.")
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment
