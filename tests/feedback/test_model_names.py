"""A model's name is read one way wherever it is given: stripped, as a string or as an object's
`name`, and a name given twice is refused where it is given (a generation's `models`, a
campaign's `generation_models`), before any model is asked."""

from __future__ import annotations

import pytest

from feedback.models import Campaign, GenerationJob
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


def test_a_name_given_twice_in_a_generation_is_refused_however_it_is_spelt(
    model_server, api_for, engineer
):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/generate/",
        {"models": ["m-a", {"name": "m-a ", "max_tokens": 100}]},
        format="json",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"models": ["a model appears twice: 'm-a'"]}
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0


def test_an_objects_name_is_asked_for_and_stored_stripped(
    model_server, api_for, engineer, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(kind="rating", overlap=1)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)

    with django_capture_on_commit_callbacks(execute=True):
        res = api_for(engineer).post(
            f"/api/v1/campaigns/{campaign.pk}/generate/",
            {"models": [{"name": " plain\n", "max_tokens": 100}]},
            format="json",
        )

    assert res.status_code == 202, res.json()
    assert res.json()["models"][0]["name"] == "plain"
    assert list(model_server.calls) == [("plain", item.prompt)]
    assert item.responses.get().model_name == "plain"


def test_a_blank_objects_name_is_refused(model_server, api_for, engineer):
    campaign = CampaignFactory(kind="rating", overlap=1)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/generate/", {"models": [{"name": "  "}]}, format="json"
    )

    assert res.status_code == 400
    assert list(res.json()["error"]["fields"]) == ["models[0]"]


@pytest.mark.parametrize("models", [["x", "x"], ["x", " x "]])
def test_a_campaign_naming_a_model_twice_is_refused_on_generation_models(api_for, engineer, models):
    res = api_for(engineer).post(
        "/api/v1/campaigns/",
        {"name": "Pairs", "kind": "pairwise", "generation_models": models},
        format="json",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"generation_models": ["a model appears twice: 'x'"]}
    assert not Campaign.objects.exists()


def test_a_campaign_changed_to_name_a_model_twice_is_refused_and_unchanged(
    api_for, engineer, pairwise_campaign
):
    Campaign.objects.filter(pk=pairwise_campaign.pk).update(generation_models=["m-1", "m-2"])

    res = api_for(engineer).patch(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/",
        {"generation_models": ["m-3", "m-3"], "name": "Renamed"},
        format="json",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"generation_models": ["a model appears twice: 'm-3'"]}
    pairwise_campaign.refresh_from_db()
    assert pairwise_campaign.generation_models == ["m-1", "m-2"]
    assert pairwise_campaign.name != "Renamed"


def test_a_price_too_large_for_a_number_is_refused_naming_it(model_server, api_for, engineer):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=campaign, responses=0, open_slots=0)

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{campaign.pk}/generate/",
        data='{"models": [{"name": "a", "input_usd_per_million": ' + "9" * 400 + '}, "b"]}',
        content_type="application/json",
    )

    assert res.status_code == 400, res.content
    assert res.json()["error"]["fields"] == {
        "models[0].input_usd_per_million": ["must be a non-negative number"]
    }
    assert GenerationJob.objects.count() == 0
    assert model_server.requests == 0
