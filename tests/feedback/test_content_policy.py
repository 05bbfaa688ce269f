"""The Content-Security-Policy header, built once per process: on every kind of response it is
what django-csp's own middleware sets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from csp.constants import HEADER, HEADER_REPORT_ONLY, NONCE, SELF
from csp.middleware import CSPMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from feedback.content_policy import PolicyOnceMiddleware


def _plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _updated(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("ok")
    response._csp_update = {"img-src": ["https://images.example.test"]}  # type: ignore[attr-defined]
    return response


def _replaced(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("ok")
    response._csp_replace = {"script-src": [SELF, "https://cdn.example.test"]}  # type: ignore[attr-defined]
    return response


def _exempt(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("ok")
    response._csp_exempt = True  # type: ignore[attr-defined]
    return response


def _own_header(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("ok")
    response[HEADER] = "default-src 'none'; sandbox"
    return response


def _headers(
    middleware: type[CSPMiddleware], view: Callable[[HttpRequest], HttpResponse]
) -> dict[str, str]:
    request = RequestFactory().get("/somewhere/")
    response = middleware(view)(request)
    return {name: response[name] for name in (HEADER, HEADER_REPORT_ONLY) if name in response}


VIEWS = [_plain, _updated, _replaced, _exempt, _own_header]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_each_response_gets_the_header_django_csp_gives_it(view):
    ours = _headers(PolicyOnceMiddleware, view)
    assert ours == _headers(CSPMiddleware, view)
    # And again, from the policy built once.
    assert _headers(PolicyOnceMiddleware, view) == ours


def test_the_policy_is_the_settings_one_and_is_built_again_when_they_change():
    before = _headers(PolicyOnceMiddleware, _plain)
    assert "default-src 'self'" in before[HEADER]
    assert HEADER_REPORT_ONLY not in before
    changed = {"DIRECTIVES": {"default-src": [SELF], "img-src": [SELF, "https://x.example.test"]}}
    trial = {"DIRECTIVES": {"default-src": ["'none'"]}}
    with override_settings(
        CONTENT_SECURITY_POLICY=changed, CONTENT_SECURITY_POLICY_REPORT_ONLY=trial
    ):
        during = _headers(PolicyOnceMiddleware, _plain)
        assert during == _headers(CSPMiddleware, _plain)
        assert "https://x.example.test" in during[HEADER]
        assert during[HEADER_REPORT_ONLY] == "default-src 'none'"
    assert _headers(PolicyOnceMiddleware, _plain) == before


def test_a_page_that_asks_for_a_nonce_gets_it_in_its_header():
    def with_nonce(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"<script nonce='{request.csp_nonce}'></script>")  # type: ignore[attr-defined]

    with override_settings(
        CONTENT_SECURITY_POLICY={"DIRECTIVES": {"default-src": [SELF], "script-src": [SELF, NONCE]}}
    ):
        request = RequestFactory().get("/somewhere/")
        response = PolicyOnceMiddleware(with_nonce)(request)
    nonce = request._csp_nonce  # type: ignore[attr-defined]
    assert f"'nonce-{nonce}'" in response[HEADER]
    assert f"nonce='{nonce}'" in response.content.decode()


def test_a_nonce_asked_for_after_the_header_is_written_is_an_error():
    request = RequestFactory().get("/somewhere/")
    PolicyOnceMiddleware(_plain)(request)
    with pytest.raises(Exception, match="csp_nonce"):
        str(request.csp_nonce)  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_pages_and_the_api_are_served_with_the_policy(client):
    expected = _headers(CSPMiddleware, _plain)[HEADER]
    assert client.get("/accounts/login/")[HEADER] == expected
    assert client.get("/api/v1/campaigns/")[HEADER] == expected
