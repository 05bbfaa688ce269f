from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from feedback import services
from feedback.models import User
from tests.celery_worker import (  # noqa: F401  (shared fixtures)
    celery_prefork_worker_process,
    celery_worker_process,
)
from tests.deployed_client import deployed_api_client
from tests.feedback.factories import CampaignFactory, UserFactory


def pytest_sessionstart(session: pytest.Session) -> None:
    # The suite's promise is PostgreSQL; a silent fall back to SQLite would hide real bugs.
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.exit(
            f"The tests run on PostgreSQL; DATABASE_URL points at {connection.vendor}.",
            returncode=2,
        )


@pytest.fixture
def expert(db: Any) -> User:
    return UserFactory(role=User.Role.EXPERT, email="expert@example.test")


@pytest.fixture
def other_expert(db: Any) -> User:
    return UserFactory(role=User.Role.EXPERT, email="other@example.test")


@pytest.fixture
def engineer(db: Any) -> User:
    return UserFactory(role=User.Role.ENGINEER, email="engineer@example.test")


@pytest.fixture
def admin_user(db: Any) -> User:
    return UserFactory(
        role=User.Role.ADMIN, email="admin@example.test", is_staff=True, is_superuser=True
    )


@pytest.fixture
def api_for() -> Callable[[User], APIClient]:
    """An API client authenticated the way engineers are: with a bearer API key, its requests
    through the middleware the web process gives them (tests/deployed_client.py)."""

    def make(user: User) -> APIClient:
        _, raw = services.api_key_create(user=user, name="test")
        client = deployed_api_client()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make


@pytest.fixture
def pairwise_campaign(db: Any, engineer: User) -> Any:
    return CampaignFactory(kind="pairwise", created_by=engineer)
