"""A closed campaign takes no new items or responses: no expert is given its work again."""

from __future__ import annotations

import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback import imports, services
from feedback.item_input import item_parse
from feedback.models import Campaign, ImportJob, Item
from tests.feedback.import_files import item_object, jsonl

pytestmark = pytest.mark.django_db


def _closed(campaign: Campaign) -> None:
    # As an admin's PATCH leaves it; the objects the tests hold still say active.
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.CLOSED)


def _refused(res) -> None:
    assert res.status_code == 409, res.json()
    error = res.json()["error"]
    assert error["code"] == "campaign_closed"
    assert "is closed: a closed campaign takes no new items" in error["message"]


def test_a_batch_into_a_closed_campaign_is_a_409(api_for, engineer, pairwise_campaign):
    _closed(pairwise_campaign)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [item_object(1)], format="json"
    )

    _refused(res)
    assert Item.objects.count() == 0


def test_an_import_into_a_closed_campaign_is_a_409(api_for, engineer, pairwise_campaign):
    _closed(pairwise_campaign)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
        {"file": SimpleUploadedFile("items.jsonl", jsonl(item_object(1)))},
        format="multipart",
    )

    _refused(res)
    assert ImportJob.objects.count() == 0


def test_a_generation_in_a_closed_campaign_is_a_409(api_for, engineer, pairwise_campaign, settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # never asked
    _closed(pairwise_campaign)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/generate/", {"models": ["a", "b"]}, format="json"
    )

    _refused(res)


def test_a_batch_checked_while_the_campaign_was_open_is_refused_once_it_closed(
    engineer, pairwise_campaign
):
    # Closed between the batch's checks and its write: the write reads the campaign's row
    # under its lock, as a closing waits for it.
    item, errors = item_parse(item_object(1), campaign=pairwise_campaign)
    assert item is not None, errors
    _closed(pairwise_campaign)

    with pytest.raises(imports.CampaignClosed):
        services.items_add(actor=engineer, campaign=pairwise_campaign, items=[item])

    assert Item.objects.count() == 0


def test_an_import_whose_campaign_closed_before_it_ran_imports_nothing(
    engineer, pairwise_campaign, django_capture_on_commit_callbacks, caplog
):
    with django_capture_on_commit_callbacks(execute=False):
        job = imports.import_create(
            actor=engineer,
            campaign=pairwise_campaign,
            upload=SimpleUploadedFile("items.jsonl", jsonl(item_object(1), item_object(2))),
        )
    _closed(pairwise_campaign)

    with caplog.at_level(logging.INFO):
        imports.import_run(import_id=job.pk)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert "is closed: a closed campaign takes no new items" in job.message
    assert Item.objects.count() == 0
    _stopped_without_a_traceback(caplog, f"import {job.pk} stopped: Campaign", "feedback.imports")


def test_a_generation_whose_campaign_closed_before_it_ran_stores_nothing(
    model_server, api_for, engineer, django_capture_on_commit_callbacks, caplog
):
    from feedback.generation import generation_run
    from feedback.models import GenerationJob, Response
    from tests.feedback.factories import CampaignFactory, ItemFactory

    campaign = CampaignFactory(kind="pairwise", overlap=1, created_by=engineer)
    ItemFactory.create_batch(2, campaign=campaign, responses=0, open_slots=0)
    with django_capture_on_commit_callbacks(execute=False):
        res = api_for(engineer).post(
            f"/api/v1/campaigns/{campaign.pk}/generate/", {"models": ["a", "b"]}, format="json"
        )
    assert res.status_code == 202, res.json()
    _closed(campaign)

    with caplog.at_level(logging.INFO):
        job = generation_run(generation_id=res.json()["id"])

    assert job.status == GenerationJob.Status.FAILED
    assert "is closed: a closed campaign takes no new items or responses" in job.message
    assert Response.objects.count() == 0
    _stopped_without_a_traceback(
        caplog, f"generation {job.pk} stopped: Campaign", "feedback.generation"
    )


def _stopped_without_a_traceback(caplog, said: str, logger: str) -> None:
    # An admin's decision, not a failure of the server: no error, no traceback; logged by
    # the job's own module.
    assert any(said in r.getMessage() and r.name == logger for r in caplog.records), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
