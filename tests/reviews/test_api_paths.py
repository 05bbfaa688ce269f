"""A request to a path the API does not have is answered in the API's error format: a script
gets JSON naming the path, never an HTML page, and a POST is never redirected (a redirect turns
it into a GET and drops its body)."""

from __future__ import annotations

import pytest

from reviews.models import Review
from tests.feedback.factories import ItemFactory

pytestmark = pytest.mark.django_db


def _error(res) -> dict:
    assert res["Content-Type"].startswith("application/json"), res.content[:200]
    return res.json()["error"]


def test_a_submit_without_the_trailing_slash_is_a_404_naming_the_right_path(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit"
    body = {"preference": {"chosen": payload["item"]["responses"][0]["id"], "strength": 2}}

    res = client.post(url, body, format="json")

    assert res.status_code == 404
    error = _error(res)
    assert error["code"] == "not_found"
    assert f"POST {url}" in error["message"]
    assert f"{url}/" in error["message"]
    assert Review.objects.count() == 0
    claim = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next")
    assert claim.status_code == 404
    assert f"/api/v1/campaigns/{pairwise_campaign.pk}/next/" in _error(claim)["message"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/assignments/1/nope/", "/api/v1/assignments/-1/submit/", "/api/v1/nope"],
)
def test_an_unknown_api_path_is_a_json_404(api_for, expert, path):
    res = api_for(expert).post(path, {}, format="json")

    assert res.status_code == 404
    error = _error(res)
    assert error["code"] == "not_found"
    assert path in error["message"]


def test_a_get_without_the_trailing_slash_is_still_redirected(api_for, engineer):
    res = api_for(engineer).get("/api/v1/campaigns")

    assert res.status_code == 301
    assert res["Location"] == "/api/v1/campaigns/"


def test_pages_outside_the_api_keep_their_html_404(client):
    res = client.get("/no-such-page/")

    assert res.status_code == 404
    assert res["Content-Type"].startswith("text/html")


def test_a_host_the_server_does_not_serve_is_a_json_400_on_the_api(api_for, expert, client):
    res = api_for(expert).post("/api/v1/campaigns/1/next/", HTTP_HOST="evil.example")

    assert res.status_code == 400
    assert _error(res)["code"] == "bad_request"
    page = client.get("/", HTTP_HOST="evil.example")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")


def test_with_debug_on_as_in_the_demo_api_errors_are_json_not_debug_pages(
    settings, api_for, expert, pairwise_campaign
):
    """`make run` runs with DEBUG on, where Django answers with its HTML debug pages and never
    calls the API's handlers. Pages outside the API keep them."""
    settings.DEBUG = True
    client = api_for(expert)  # a new client loads the middleware with DEBUG on

    unknown = client.post("/api/v1/nope/", {}, format="json")
    no_slash = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next", format="json")
    bad_host = client.get("/api/v1/campaigns/", headers={"host": "evil.example"})
    page = client.get("/no-such-page/")

    assert (unknown.status_code, _error(unknown)["code"]) == (404, "not_found")
    assert f"/api/v1/campaigns/{pairwise_campaign.pk}/next/" in _error(no_slash)["message"]
    assert (bad_host.status_code, _error(bad_host)["code"]) == (400, "bad_request")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html"), "Django's page outside the API"
