"""A request that fails in the server: the API's error format under /api/, a page elsewhere."""

from __future__ import annotations

from django.test import RequestFactory
from django.urls import get_resolver

from feedback.api_paths import server_error


def test_the_urlconf_answers_server_errors_with_it() -> None:
    assert get_resolver().resolve_error_handler(500) is server_error


def test_an_api_client_reads_a_server_error_as_any_other_error(rf: RequestFactory) -> None:
    res = server_error(rf.post("/api/v1/campaigns/1/items/"))
    assert res.status_code == 500
    assert res["Content-Type"] == "application/json"
    assert b'"code":"server_error"' in res.content.replace(b" ", b"")


def test_a_page_gets_the_usual_error_page(rf: RequestFactory) -> None:
    res = server_error(rf.get("/review/history/"))
    assert res.status_code == 500
    assert res["Content-Type"].startswith("text/html")
