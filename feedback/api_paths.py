"""What Django answers before a view runs, in the API's error format where scripts read it:
paths the API does not have (never redirected), bodies Django refuses while reading them,
bodies sent in chunks (refused: Django would read them as empty), and server errors.

Kept apart from `api_errors` (DRF's exception handler and parser): the middleware is loaded
before DRF's settings, which import that module; the 400 handler imports it when it runs.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware
from django.urls import get_urlconf, is_valid_path
from django.views import defaults

from feedback.errors import error_body

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


# Methods whose body, if any, nothing reads.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class RefuseChunkedBodies:
    """A body sent in chunks (no Content-Length) reaches Django as an empty one, so the request
    would run as if nothing had been sent: a generation without its `item_ids` is one over
    every item. Such a request is refused (411) before anything reads it. A proxy in front
    (deploy/nginx.example.conf) buffers bodies and sends their length, so only clients that
    reach gunicorn directly meet this. (Under an ASGI server Django reads a chunked body; the
    deployment serves WSGI through gunicorn, where it does not.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked or request.META.get("CONTENT_LENGTH") or request.method in _BODILESS:
            return self.get_response(request)
        message = (
            "A body sent in chunks (Transfer-Encoding: chunked) is not read here; send it"
            " with a Content-Length."
        )
        refused: HttpResponse
        if _is_api(request):
            refused = JsonResponse(error_body("length_required", message), status=411)
        else:
            refused = HttpResponse(message, status=411, content_type="text/plain; charset=utf-8")
        # Answered before CommonMiddleware, which would set the length.
        refused["Content-Length"] = str(len(refused.content))
        return refused


class ApiErrorsWithDebug:
    """With DEBUG on (the `make run` demo, development), Django answers a path no view matches,
    a request it refuses before the view and a server error with its HTML debug pages, never
    calling the handlers below. Under /api/ such a page is replaced by the API's error body, as
    with DEBUG off, so a script reads the demo's answers as it will a server's. Not loaded with
    DEBUG off, where the handlers answer. (A body over Django's limits, refused before the view,
    is then a plain `bad_request`: the limit it broke is not known here.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not settings.DEBUG:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not _is_api(request)
            or not response.get("Content-Type", "").startswith("text/html")
        ):
            return response
        if response.status_code == 404:
            return not_found(request, Exception())
        if response.status_code >= 500:
            return server_error(request)
        if response.status_code == 400:
            return bad_request(request, Exception())
        return response


class ApiCommonMiddleware(CommonMiddleware):
    """Django's CommonMiddleware, except that a request to an API path without its trailing
    slash that is not a GET or HEAD is not redirected to the path with one.

    A client follows a 301 with a GET and without its body: a submit sent to `.../submit` was
    answered 405 "GET not allowed" and its review was lost. It gets a 404 naming the path to
    use instead (`not_found`)."""

    def should_redirect_with_slash(self, request: HttpRequest) -> bool:
        if _is_api(request) and request.method not in {"GET", "HEAD"}:
            return False
        return super().should_redirect_with_slash(request)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 404 of a path no view matched: the API's error format under /api/, where scripts
    read the answer, and Django's page everywhere else."""
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    message = f"No API endpoint at {request.method} {request.path}."
    if not request.path_info.endswith("/") and is_valid_path(
        f"{request.path_info}/", get_urlconf()
    ):
        message += f" The API's paths end with a slash: {request.path}/"
    name = request.path.rsplit("/", 1)[-1]
    if request.method in {"PUT", "POST"} and "." in name:
        # `curl -T FILE URL/` sends PUT URL/FILE.
        message += (
            " A file is sent as multipart/form-data in a `file` field to an endpoint that"
            f" takes it (curl -F file=@{name} .../imports/, not curl -T, which adds the"
            " file's name to the URL)."
        )
    return JsonResponse(error_body("not_found", message), status=404)


def _answers_scripts(request: HttpRequest) -> bool:
    view = getattr(getattr(request, "resolver_match", None), "func", None)
    return _is_api(request) or bool(getattr(view, "script_only", False))


def server_error(request: HttpRequest) -> HttpResponse:
    """A request that failed in the server (logged with its traceback by Django): JSON under
    /api/ and for the endpoints only scripts call, so a client reads it as any other error;
    Django's page elsewhere."""
    if not _answers_scripts(request):
        return defaults.server_error(request)
    message = "The server failed while handling this request; it has been logged."
    return JsonResponse(error_body("server_error", message), status=500)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A request Django refused before its view ran: a body over its limits (read by the CSRF
    check of a signed-in POST, before the view), a Host it does not serve. JSON under /api/
    and for the endpoints only scripts call (the autosave), Django's page elsewhere."""
    if not _answers_scripts(request):
        return defaults.bad_request(request, exception)
    from feedback.api_errors import django_limit_error

    refused = django_limit_error(exception)
    if refused is not None:
        return JsonResponse(refused[0], status=refused[1])
    message = "The request could not be read; nothing was changed."
    return JsonResponse(error_body("bad_request", message), status=400)
