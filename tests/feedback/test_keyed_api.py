"""The web process's application (feedback/wsgi.py) sends a request to the API that carries an
API key through the middleware such a request uses, and every other through the whole list.
The two chains must answer such a request alike, byte for byte and header for header."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from django.conf import settings

from feedback import services
from feedback.keyed_api import (
    BROWSER_ONLY_MIDDLEWARE,
    KeyedApiHandler,
    keyed_api_middleware,
    keyed_api_request,
)
from feedback.models import User
from reviews.models import Review
from tests.feedback.factories import ItemFactory, UserFactory


def _environ(path: str, *, method: str = "POST", authorization: str | None = None, **more: Any):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    return environ | more


@pytest.mark.parametrize(
    ("environ", "keyed"),
    [
        (_environ("/api/v1/campaigns/", authorization="Bearer efk_abc"), True),
        (_environ("/api/v1/campaigns/1/next/", authorization="bearer efk_abc"), True),
        # Refused by the key's authentication, with the same answer on either chain.
        (_environ("/api/v1/campaigns/", authorization="Bearer"), True),
        (_environ("/api/v1/campaigns/", authorization="Bearer a b"), True),
        (_environ("/api/v1/campaigns/"), False),
        (_environ("/api/v1/campaigns/", authorization="Basic dXNlcjpwdw=="), False),
        (_environ("/api/v1/campaigns/", authorization=" \u00a0 "), False),
        (_environ("/api/v1/docs/", method="GET", authorization="Bearer efk_abc"), False),
        (_environ("/review/", method="GET", authorization="Bearer efk_abc"), False),
        (_environ("/apiary/", authorization="Bearer efk_abc"), False),
    ],
)
def test_which_requests_take_the_shorter_chain(environ, keyed):
    assert keyed_api_request(environ) is keyed


def test_the_shorter_chain_is_the_whole_list_less_what_only_a_browser_uses():
    whole = list(settings.MIDDLEWARE)
    # Each name is in the list as written: a middleware renamed or replaced in the settings
    # would otherwise stay in the shorter chain unnoticed.
    assert set(whole) >= BROWSER_ONLY_MIDDLEWARE
    assert keyed_api_middleware() == [m for m in whole if m not in BROWSER_ONLY_MIDDLEWARE]
    assert "django.middleware.security.SecurityMiddleware" in keyed_api_middleware()

    KeyedApiHandler()

    assert whole == settings.MIDDLEWARE


def _call(handler: Any, method: str, path: str, key: str, body: bytes = b"", **extra: str):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    } | extra
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"] = status
        answer["headers"] = sorted(headers)

    chunks = handler(environ, start_response)
    try:
        answer["body"] = b"".join(chunks)
    finally:
        chunks.close()
    return answer


@pytest.fixture
def app(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    from feedback.wsgi import application

    return application


@pytest.mark.django_db(transaction=True)
def test_both_chains_answer_an_api_key_alike(app, pairwise_campaign):
    expert = UserFactory(role=User.Role.EXPERT, email="keyed@example.test")
    key = services.api_key_create(user=expert, name="t")[1]
    ItemFactory(campaign=pairwise_campaign)
    campaign = pairwise_campaign.pk

    def alike(method: str, path: str, body: bytes = b"", *, key: str = key, **extra: str):
        keyed = _call(app.keyed, method, path, key, body, **extra)
        whole = _call(app.whole, method, path, key, body, **extra)
        assert keyed == whole, (method, path)
        return keyed

    claimed = _call(app.keyed, "POST", f"/api/v1/campaigns/{campaign}/next/", key)
    assert claimed["status"] == "200 OK", claimed
    # Asked again, the live claim is the answer on either chain.
    again = alike("POST", f"/api/v1/campaigns/{campaign}/next/")
    assert json.loads(again["body"]) == json.loads(claimed["body"])
    headers = dict(again["headers"])
    assert headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in headers
    assert "Set-Cookie" not in headers

    payload = json.loads(claimed["body"])
    submit = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    chosen = payload["item"]["responses"][0]["id"]
    body = json.dumps({"preference": {"chosen": chosen, "strength": 1}}).encode()
    first = _call(app.keyed, "POST", submit, key, body, CONTENT_TYPE="application/json")
    assert first["status"] == "201 Created", first
    repeat = alike("POST", submit, body, CONTENT_TYPE="application/json")
    assert repeat["status"] == "200 OK"
    assert Review.objects.count() == 1

    other = json.dumps({"preference": {"chosen": chosen, "strength": 3}}).encode()
    assert alike("POST", submit, other, CONTENT_TYPE="application/json")["status"].startswith("409")
    assert alike("GET", "/api/v1/campaigns/")["status"] == "200 OK"
    assert alike("GET", "/api/v1/campaigns")["status"].startswith("301")
    assert alike("POST", submit[:-1], body, CONTENT_TYPE="application/json")["status"].startswith(
        "404"
    )
    assert alike("GET", f"/api/v1/campaigns/{campaign}/next/")["status"].startswith("405")
    assert alike("POST", submit, b"{", CONTENT_TYPE="application/json")["status"].startswith("400")
    assert alike("POST", submit, b"a=1", CONTENT_TYPE="text/csv")["status"].startswith("415")
    chunked = alike(
        "POST",
        submit,
        body,
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert chunked["status"].startswith("411")
    assert alike("GET", "/api/v1/campaigns/", key="efk_unknown")["status"].startswith("401")
    assert alike("GET", "/api/v1/campaigns/", key="")["status"].startswith("401")
    assert alike("GET", "/api/v1/schema/")["status"] == "200 OK"
    assert Review.objects.count() == 1
