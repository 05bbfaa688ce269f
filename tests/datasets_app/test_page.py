"""The engineers' datasets page: datasets, versions with counts and files, the rendered card."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from datasets_app.models import DatasetVersion
from feedback.models import User
from tests.datasets_app import factories as f
from tests.feedback.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def built(engineer: User, django_capture_on_commit_callbacks: Any) -> Any:
    campaign = f.campaign("pairwise", overlap=1, items=4)
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    dataset = f.dataset(engineer, [campaign], "sft", description="Briefs <script>alert(1)</script>")
    return f.build(dataset, engineer, django_capture_on_commit_callbacks)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_engineer_sees_datasets_versions_files_and_the_card(engineer, built):
    client = _client(engineer)
    listing = client.get(reverse("datasets-page"))
    assert listing.status_code == 200
    assert "sft set" in listing.content.decode()
    page = client.get(reverse("dataset-page", args=[built.dataset_id]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "v1" in html
    assert "Ready" in html
    assert "train 4" in html
    assert reverse("api-dataset-file", args=[built.dataset_id, 1, "data/train.jsonl"]) in html
    # The card is rendered from markdown (its YAML header is not shown) and sanitised.
    assert "<h2>Rows</h2>" in html
    assert "config_name" not in html
    assert "<script>alert(1)</script>" not in html


def test_an_engineer_builds_a_new_version_from_the_page(
    engineer, built, django_capture_on_commit_callbacks
):
    client = _client(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post(reverse("dataset-build", args=[built.dataset_id]))
    assert res.status_code == 302
    assert DatasetVersion.objects.get(dataset_id=built.dataset_id, number=2).status == "ready"


@pytest.mark.parametrize("role", [User.Role.EXPERT, User.Role.LEAD])
def test_other_roles_are_refused(built, role):
    client = _client(UserFactory(role=role))
    assert client.get(reverse("datasets-page")).status_code == 403
    assert client.get(reverse("dataset-page", args=[built.dataset_id])).status_code == 403
    assert client.post(reverse("dataset-build", args=[built.dataset_id])).status_code == 403
    assert DatasetVersion.objects.filter(dataset_id=built.dataset_id).count() == 1


def test_anonymous_visitors_are_sent_to_sign_in(built):
    res = Client().get(reverse("datasets-page"))
    assert res.status_code == 302
    assert "/accounts/login/" in res["Location"]


def test_an_unknown_dataset_is_not_found(engineer):
    assert _client(engineer).get(reverse("dataset-page", args=[999])).status_code == 404
