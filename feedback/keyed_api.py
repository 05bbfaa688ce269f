"""The web process's WSGI application: a request to the API that carries an API key skips the
middleware only a browser uses.

Such a request is authenticated by its key alone: the API's first authentication class reads
any `Authorization: Bearer …` header, and answers 401 for a key it does not know, so the
session behind a cookie is never read. Sessions, CSRF (the API's views are exempt), the
session's user, messages, htmx, allauth's account middleware, the MFA policy (which lets such
a request through) and static files (never under /api/) do nothing for it, yet each costs its
work on every request: about 7% of the Python of an API claim and submit
(bench/README.md, `claims_http`). Every other middleware, the security headers among them,
runs for it as for any request, and `settings.MIDDLEWARE` stays whole, so Django's deploy
checks read it as written.

Everything else goes through the whole list: pages, requests without a key, and the API's
documentation page, which is made for a browser (its script carries a CSRF token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from feedback.api_keys import bearer_parts
from feedback.api_paths import API_PREFIX

# Under API_PREFIX, but pages for a browser.
BROWSER_PAGES = ("/api/v1/docs/",)

BROWSER_ONLY_MIDDLEWARE = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
        "allauth.account.middleware.AccountMiddleware",
        "feedback.mfa_policy.MfaPolicyMiddleware",
    }
)


def keyed_api_request(environ: dict[str, Any]) -> bool:
    """Is this a request to the API that its key alone authenticates?"""
    path = environ.get("PATH_INFO", "")
    if not path.startswith(API_PREFIX) or path.startswith(BROWSER_PAGES):
        return False
    header = environ.get("HTTP_AUTHORIZATION")
    # As the API's authentication reads it.
    return header is not None and bearer_parts(header) is not None


def keyed_api_middleware() -> list[str]:
    return [path for path in settings.MIDDLEWARE if path not in BROWSER_ONLY_MIDDLEWARE]


class KeyedApiMiddleware:
    """For a handler of Django's: `keyed_api_middleware()` for its middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE: the shorter list is put in its
        # place while this handler is built, before it serves a request, then put back.
        whole = settings.MIDDLEWARE
        settings.MIDDLEWARE = keyed_api_middleware()
        try:
            super().load_middleware(is_async)  # type: ignore[misc]
        finally:
            settings.MIDDLEWARE = whole


class KeyedApiHandler(KeyedApiMiddleware, WSGIHandler):
    pass


StartResponse = Callable[..., Any]


def application_with_keyed_api() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    whole = WSGIHandler()
    keyed = KeyedApiHandler()

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        handler = keyed if keyed_api_request(environ) else whole
        return handler(environ, start_response)

    application.keyed = keyed  # type: ignore[attr-defined]
    application.whole = whole  # type: ignore[attr-defined]
    return application
