"""The API's content negotiation answers as DRF's own does, for every kind of Accept."""

from __future__ import annotations

import pytest
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from feedback.api_negotiation import CommonAcceptFirst

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/json; indent=4",
    "application/*",
    "text/html",
    "text/html, */*;q=0.1",
    "application/json, text/html",
    "text/html;q=0.5, application/json",
    "image/png",
]
RENDERER_SETS = [[JSONRenderer()], [BrowsableAPIRenderer(), JSONRenderer()]]


def _choice(negotiation, accept, renderers, query="", suffix=None):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/v1/campaigns/{query}", **headers))
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers, suffix)
    except exceptions.NotAcceptable:
        return "406"
    return type(renderer).__name__, media_type


@pytest.mark.parametrize("renderers", RENDERER_SETS, ids=["json", "browsable+json"])
@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize(("query", "suffix"), [("", None), ("?format=json", None), ("", "json")])
def test_the_renderer_and_media_type_are_drfs(renderers, accept, query, suffix):
    ours = _choice(CommonAcceptFirst(), accept, renderers, query, suffix)
    assert ours == _choice(DefaultContentNegotiation(), accept, renderers, query, suffix)


def test_the_api_answers_json_and_refuses_what_it_cannot_give(api_for, expert):
    client = api_for(expert)
    assert client.get("/api/v1/campaigns/")["Content-Type"] == "application/json"
    refused = client.get("/api/v1/campaigns/", HTTP_ACCEPT="text/html")
    assert refused.status_code == 406
