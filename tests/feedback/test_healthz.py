from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/5"


def _closed_port() -> int:
    # Bind then close: nothing listens there for the moment the test needs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_answers_200_with_database_and_broker_ok(client, settings):
    settings.CELERY_BROKER_URL = REDIS_URL
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-cache" in res["Cache-Control"]


def test_it_says_tasks_run_in_process_when_no_broker_is_configured(client, settings):
    settings.CELERY_BROKER_URL = ""
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json()["broker"].startswith("eager")


def test_it_answers_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    res = client.get("/healthz")
    assert res.status_code == 503
    body = res.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("down")


def test_it_needs_no_login_and_only_answers_get(client):
    assert client.get("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_it_is_served_over_plain_http_when_https_is_enforced(client, settings):
    # Load balancers probe over http; everything else is redirected to https.
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301
