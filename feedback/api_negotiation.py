"""DRF's content negotiation, with its common answer given at once.

The API renders JSON only. DRF parses the Accept header and matches it against each renderer
on every request: about 1.5% of the server's CPU for an API claim and submit, though most clients
send no Accept header or `*/*` (curl, requests, httpx, the openai client) or the renderer's
own type. Those get the first renderer at once, with the media type DRF would give; anything
else (a format suffix or `?format=`, other types, quality values) goes through DRF's own code,
406 included.
"""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

_ANYTHING = {None, "*/*"}


class CommonAcceptFirst(DefaultContentNegotiation):
    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)
        param = self.settings.URL_FORMAT_OVERRIDE
        if renderers and not format_suffix and not (param and param in request.query_params):
            accept = request.META.get("HTTP_ACCEPT")
            first = renderers[0]
            if accept in _ANYTHING:
                return first, first.media_type
            if accept == first.media_type:
                return first, accept
        return super().select_renderer(request, renderers, format_suffix)
