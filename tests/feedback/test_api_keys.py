"""Bearer API keys: who a key is, and when it is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from feedback import services
from feedback.models import ApiKey, User
from tests.feedback.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_key_acts_as_its_owner(expert: User, engineer: User) -> None:
    hidden = CampaignFactory(status="draft", created_by=engineer)
    _, expert_raw = services.api_key_create(user=expert, name="laptop")
    _, engineer_raw = services.api_key_create(user=engineer, name="ci")

    # A draft campaign is for engineers to see, not experts: each key is its owner.
    assert _client(expert_raw).get(f"/api/v1/campaigns/{hidden.pk}/").status_code == 404
    assert _client(engineer_raw).get(f"/api/v1/campaigns/{hidden.pk}/").status_code == 200


@pytest.mark.parametrize("header", ["Bearer efk_unknown", "Bearer", "Bearer two words", "Bearer  "])
def test_an_unknown_or_malformed_key_is_refused(expert: User, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    res = client.get("/api/v1/campaigns/")
    assert res.status_code == 401
    assert res.json()["error"]["message"]


def test_a_revoked_key_is_refused_and_the_owners_other_keys_still_work(expert: User) -> None:
    revoked, revoked_raw = services.api_key_create(user=expert, name="old")
    _, live_raw = services.api_key_create(user=expert, name="new")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())

    res = _client(revoked_raw).get("/api/v1/campaigns/")
    assert res.status_code == 401
    assert "revoked" in res.json()["error"]["message"]
    assert _client(live_raw).get("/api/v1/campaigns/").status_code == 200


def test_the_key_of_a_deactivated_owner_is_refused(expert: User) -> None:
    _, raw = services.api_key_create(user=expert, name="laptop")
    User.objects.filter(pk=expert.pk).update(is_active=False)

    res = _client(raw).get("/api/v1/campaigns/")
    assert res.status_code == 401
    assert "deactivated" in res.json()["error"]["message"]


def test_last_used_is_recorded_at_most_once_a_minute(expert: User) -> None:
    key, raw = services.api_key_create(user=expert, name="laptop")
    client = _client(raw)

    assert client.get("/api/v1/campaigns/").status_code == 200
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None
    assert client.get("/api/v1/campaigns/").status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first

    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(seconds=61))
    assert client.get("/api/v1/campaigns/").status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first


def test_the_codes_of_a_refused_key_and_of_no_credentials(expert: User) -> None:
    _, raw = services.api_key_create(user=expert, name="laptop")
    ApiKey.objects.filter(user=expert).update(revoked_at=timezone.now())
    refused = _client(raw).get("/api/v1/campaigns/")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "authentication_failed")
    none = APIClient().get("/api/v1/campaigns/")
    assert (none.status_code, none.json()["error"]["code"]) == (401, "not_authenticated")


def test_a_session_post_without_its_csrf_token_is_a_forbidden_like_any_other_403(
    expert: User,
) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(expert)
    res = client.post("/api/v1/campaigns/1/next/")
    assert res.status_code == 403
    assert res.json()["error"]["code"] == "forbidden"
    assert "CSRF" in res.json()["error"]["message"]
