"""An API test client routed as the web process routes (feedback/wsgi.py): a request to the API
with a key goes through the shorter middleware chain of feedback.keyed_api, every other request
through the whole one. The API's tests run through the chain their requests meet when deployed."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase
from rest_framework.test import APIClient, ForceAuthClientHandler

from feedback.keyed_api import KeyedApiMiddleware, keyed_api_request


class _KeyedClientHandler(KeyedApiMiddleware, ForceAuthClientHandler):
    pass


class DeployedClientHandler(ForceAuthClientHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Its chain is built by its first request, as the whole one is, so both are built
        # from the settings the test has then.
        self.keyed = _KeyedClientHandler(*args, **kwargs)

    def __call__(self, environ: dict[str, Any]) -> HttpResponseBase:
        if keyed_api_request(environ):
            self.keyed._force_user = self._force_user
            self.keyed._force_token = self._force_token
            return self.keyed(environ)
        return super().__call__(environ)


def deployed_api_client() -> APIClient:
    client = APIClient()
    client.handler = DeployedClientHandler(enforce_csrf_checks=False)
    return client
