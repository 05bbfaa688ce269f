"""A claim made while a longer write holds every open slot (an admin's change of the
campaign's overlap, until it commits) is told to ask again, not that nothing is left."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.urls import reverse

from feedback import services as feedback_services
from reviews.models import Assignment
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_while_an_overlap_change_holds_the_queue_is_a_503_to_retry(
    api_for, expert, engineer
):
    campaign = CampaignFactory(kind="pairwise", overlap=1, created_by=engineer)
    ItemFactory.create_batch(20, campaign=campaign)
    holding = threading.Event()
    release = threading.Event()
    failures: list[BaseException] = []

    def change_overlap() -> None:
        # The real change, its transaction held open as a large campaign's would be.
        try:
            with transaction.atomic():
                feedback_services.campaign_update(
                    actor=engineer, campaign=campaign, changes={"overlap": 2}
                )
                holding.set()
                release.wait(30)
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)
            holding.set()
        finally:
            connection.close()

    writer = threading.Thread(target=change_overlap)
    writer.start()
    try:
        assert holding.wait(30)
        client = api_for(expert)
        during = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
        page = client_for(expert).post(reverse("review-start", args=[campaign.pk]), follow=True)
    finally:
        release.set()
        writer.join(30)
    assert not failures, failures

    assert during.status_code == 503, during.content
    assert during.json()["error"]["code"] == "queue_busy"
    assert "ask again in a few seconds" in during.json()["error"]["message"]
    assert during["Retry-After"] == "1"
    # The page says so too, not "Nothing left for you … Thank you!".
    assert "ask again in a few seconds" in page.content.decode()
    assert "Nothing left" not in page.content.decode()
    assert not Assignment.objects.exists()
    after = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert after.status_code == 200, after.content
