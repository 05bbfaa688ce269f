"""The datasets API: recipes, builds (202), status, streamed downloads, diffs; outsiders refused."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from rest_framework.test import APIClient

from feedback.models import Item, User
from reviews.models import Review
from tests.datasets_app import factories as f
from tests.feedback.factories import ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(db: Any) -> Any:
    made = f.campaign("pairwise", overlap=2, items=10)
    f.review_all(made, f.experts(2), f.prefer("Answer 1"))
    return made


def _create(client: APIClient, campaign: Any, **extra: Any) -> Any:
    body = {"name": "PR prefs", "campaigns": [campaign.pk], "format": "dpo", **extra}
    return client.post("/api/v1/datasets/", body, format="json")


def _build(client: APIClient, dataset_id: int, capture: Any) -> dict[str, Any]:
    with capture(execute=True):
        queued = client.post(f"/api/v1/datasets/{dataset_id}/versions/")
    assert queued.status_code == 202
    assert queued.json()["status"] == "queued"
    number = queued.json()["number"]
    return client.get(f"/api/v1/datasets/{dataset_id}/versions/{number}/").json()


def test_it_builds_a_version_and_reports_counts_files_and_download_urls(
    api_for, engineer, campaign, django_capture_on_commit_callbacks
):
    client = api_for(engineer)
    created = _create(client, campaign, test_fraction=0.3, filters={"min_votes": 2})
    assert created.status_code == 201, created.json()
    assert created.json()["filters"]["min_votes"] == 2
    assert created.json()["filters"]["accepted_only"] is True

    version = _build(client, created.json()["id"], django_capture_on_commit_callbacks)
    assert version["status"] == "ready", version["error"]
    counts = version["counts"]
    assert counts["rows"]["train"] + counts["rows"]["test"] == 10
    assert counts["reviews"] == {"considered": 20, "included": 20, "excluded": {}}
    assert counts["dropped"] == {}
    assert version["recipe"]["filters"]["min_votes"] == 2
    paths = {entry["path"] for entry in version["files"]}
    assert paths == {
        "README.md",
        "manifest.json",
        "lineage.jsonl",
        "data/train.jsonl",
        "data/test.jsonl",
        "data/train-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
    }
    for entry in version["files"]:
        res = client.get(entry["url"])
        assert res.status_code == 200
        assert res.streaming
        assert res["Content-Disposition"].startswith("attachment;")
        body = b"".join(res.streaming_content)
        assert len(body) == entry["size"] == int(res["Content-Length"])
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == res["X-Content-SHA256"]

    listed = client.get(f"/api/v1/datasets/{created.json()['id']}/").json()
    assert [v["number"] for v in listed["versions"]] == [1]


def test_it_diffs_two_versions_by_rows_added_removed_and_changed(
    api_for, engineer, campaign, django_capture_on_commit_callbacks
):
    client = api_for(engineer)
    dataset_id = _create(client, campaign, test_fraction=0).json()["id"]
    assert _build(client, dataset_id, django_capture_on_commit_callbacks)["status"] == "ready"

    # Two new items are reviewed, and a lead turns one item's votes around.
    for _ in range(2):
        ItemFactory(campaign=campaign)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    first = Item.objects.filter(campaign=campaign).order_by("id").first()
    other = first.responses.get(text__startswith="Answer 0")
    lead = UserFactory(role=User.Role.LEAD)
    for review in Review.objects.filter(item=first):
        f.supersede(review, lead=lead, chosen=other)
    assert _build(client, dataset_id, django_capture_on_commit_callbacks)["status"] == "ready"

    diff = client.get(f"/api/v1/datasets/{dataset_id}/versions/1/diff/2/").json()
    assert (diff["added"], diff["removed"], diff["changed"], diff["unchanged"]) == (2, 0, 1, 9)
    assert diff["examples"]["changed"][0]["item_id"] == first.external_id
    back = client.get(f"/api/v1/datasets/{dataset_id}/versions/2/diff/1/").json()
    assert (back["added"], back["removed"], back["changed"]) == (0, 2, 1)


def test_it_refuses_a_bad_recipe_naming_each_field(api_for, engineer, campaign):
    client = api_for(engineer)
    res = _create(client, campaign, format="csv", filters={"min_agrement": 0.5})
    assert res.status_code == 400
    assert "format" in res.json()["error"]["fields"]
    res = _create(client, campaign, filters={"min_agrement": 0.5})
    assert res.status_code == 400
    assert list(res.json()["error"]["fields"]) == ["filters.min_agrement"]
    # A misspelt field of the recipe itself, read as its default, would build another split.
    res = _create(client, campaign, test_fracton=0.5)
    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"test_fracton": ["is not a field of a dataset"]}
    assert client.get("/api/v1/datasets/").json() == []
    # A recipe copied from what GET gave, renamed: its id, slug and date are ignored.
    first = _create(client, campaign).json()
    copied = client.post("/api/v1/datasets/", {**first, "name": "PR prefs 2"}, format="json")
    assert copied.status_code == 201, copied.json()
    assert copied.json()["id"] != first["id"]


def test_a_failed_version_has_no_files_and_cannot_be_diffed(
    api_for, engineer, campaign, django_capture_on_commit_callbacks
):
    client = api_for(engineer)
    dataset_id = _create(client, campaign).json()["id"]
    Item.objects.filter(pk=Item.objects.filter(campaign=campaign).first().pk).update(prompt=[])
    failed = _build(client, dataset_id, django_capture_on_commit_callbacks)
    assert failed["status"] == "failed"
    assert failed["files"] == []
    assert "prompt" in failed["error"]
    res = client.get(f"/api/v1/datasets/{dataset_id}/versions/1/files/README.md")
    assert res.status_code == 404
    assert client.get(f"/api/v1/datasets/{dataset_id}/versions/1/diff/1/").status_code == 409


def test_it_serves_only_the_files_a_version_lists(
    api_for, engineer, campaign, django_capture_on_commit_callbacks
):
    client = api_for(engineer)
    dataset_id = _create(client, campaign).json()["id"]
    _build(client, dataset_id, django_capture_on_commit_callbacks)
    for path in ("../../../etc/passwd", "data/../manifest.json", "data/other.jsonl"):
        res = client.get(f"/api/v1/datasets/{dataset_id}/versions/1/files/{path}")
        assert res.status_code == 404, path


@pytest.mark.parametrize("role", [User.Role.EXPERT, User.Role.LEAD])
def test_outsiders_see_no_dataset_and_reach_none_by_id(
    api_for, engineer, campaign, role, django_capture_on_commit_callbacks
):
    owner = api_for(engineer)
    dataset_id = _create(owner, campaign).json()["id"]
    _build(owner, dataset_id, django_capture_on_commit_callbacks)
    outsider = api_for(UserFactory(role=role))
    assert outsider.get("/api/v1/datasets/").json() == []
    assert _create(outsider, campaign).status_code in {403, 404}
    for url in (
        f"/api/v1/datasets/{dataset_id}/",
        f"/api/v1/datasets/{dataset_id}/versions/",
        f"/api/v1/datasets/{dataset_id}/versions/1/",
        f"/api/v1/datasets/{dataset_id}/versions/1/files/README.md",
        f"/api/v1/datasets/{dataset_id}/versions/1/diff/1/",
    ):
        assert outsider.get(url).status_code == 404, url
    assert outsider.post(f"/api/v1/datasets/{dataset_id}/versions/").status_code == 404


def test_anonymous_callers_are_refused(campaign):
    client = APIClient()
    assert client.get("/api/v1/datasets/").status_code in {401, 403}
    assert client.post("/api/v1/datasets/1/versions/").status_code in {401, 403}
