"""Generation against servers that answer oddly: connections that cannot be made, redirects,
200 answers that are no chat completion or that ended in an error.

Each test runs a small HTTP server of its own that answers as the test scripts it, and the real
`openai` client sends real HTTP to it (or to where OPENAI_BASE_URL points).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db

JSON = {"Content-Type": "application/json"}

# (path, attempt at that path) -> (status, headers, body)
Script = Callable[[str, int], tuple[int, dict[str, str], bytes]]


class _Scripted(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        with server.lock:
            server.requests.append((self.command, self.path))
            attempt = sum(1 for _, path in server.requests if path == self.path)
        status, headers, body = server.script(self.path, attempt)
        self.send_response(status)
        for name, value in {**JSON, **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.script: Script = lambda path, attempt: (200, {}, json.dumps(completion()).encode())

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(settings: Any) -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    settings.OPENAI_BASE_URL = f"{srv.origin}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.GENERATION_BACKOFF_SECONDS = 0.01
    settings.GENERATION_MAX_ATTEMPTS = 3
    settings.GENERATION_CONCURRENCY = 3
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def generate(api_for, engineer, django_capture_on_commit_callbacks):
    """Generate for a rating campaign of `items` items with one model; the item (the first)
    and the job's status after it ran."""
    client = api_for(engineer)

    def run(items: int = 1) -> tuple[Any, dict[str, Any]]:
        campaign = CampaignFactory(kind="rating", overlap=1)
        made = ItemFactory.create_batch(items, campaign=campaign, responses=0, open_slots=0)
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(
                f"/api/v1/campaigns/{campaign.pk}/generate/", {"models": ["m"]}, format="json"
            )
        assert res.status_code == 202, res.json()
        return made[0], client.get(f"/api/v1/generations/{res.json()['id']}/").json()

    return run


def completion(content: str = "An answer.", finish: str = "stop", **choice: Any) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- connections that fail ------------------------------------------------------------------


def test_a_refused_connection_says_so_and_is_retried(generate, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.GENERATION_BACKOFF_SECONDS = 0.01
    settings.GENERATION_MAX_ATTEMPTS = 2

    item, status = generate()

    assert status["status"] == "failed", status
    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "m",
            "message": "connection failed: [Errno 111] Connection refused"
            " (gave up after 2 attempts)",
        }
    ]


@pytest.mark.parametrize(
    ("base_url", "said"),
    [
        ("localhost:8000/v1", "is missing an 'http://' or 'https://' protocol"),
        ("ftp://models.example/v1", "has an unsupported protocol 'ftp://'"),
    ],
)
def test_a_base_url_the_client_cannot_send_to_stops_the_job(generate, settings, base_url, said):
    """No attempt can succeed: the job stops at the first item, not retrying each item."""
    settings.OPENAI_BASE_URL = base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.GENERATION_BACKOFF_SECONDS = 0.01
    settings.GENERATION_CONCURRENCY = 1

    item, status = generate(items=5)

    error = (
        f"connection failed: Request URL {said}; OPENAI_BASE_URL ({base_url}) must start"
        " with http:// or https://"
    )
    assert status["status"] == "failed"
    assert status["errors"] == [{"item": item.pk, "model": "m", "message": error}]
    assert status["message"].startswith(f"Stopped after 1 of 5 items: model m: {error}. ")


def test_a_redirect_loop_stops_the_job(server, generate):
    server.script = lambda path, attempt: (307, {"Location": path}, b"{}")

    item, status = generate(items=3)

    error = (
        "connection failed: the server redirected the request more than 20 times (a loop);"
        " check OPENAI_BASE_URL"
    )
    assert status["status"] == "failed"
    assert {"item": item.pk, "model": "m", "message": error} in status["errors"]
    assert f"model m: {error}" in status["message"]
    # The first request and its 20 redirects, once: the job stopped instead of asking again
    # (the other requests in flight when it did end too, at most 3 at a time).
    assert len(server.requests) <= 3 * 21
    assert len(server.requests) % 21 == 0


# --- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect", [301, 302, 303])
def test_a_redirect_that_would_make_the_request_a_get_is_not_followed(server, generate, redirect):
    """Followed, the request would be sent again as a GET without its messages, and the item
    fail with the server's 404 or 405, which says nothing of the redirect."""

    def script(path: str, attempt: int) -> tuple[int, dict[str, str], bytes]:
        if path == "/v1/chat/completions":
            return redirect, {"Location": "/v2/chat/completions"}, b""
        return 405, {}, b'{"error": {"message": "Method Not Allowed"}}'

    server.script = script
    item, status = generate(items=4)

    error = (
        f"the server redirected to {server.origin}/v2/chat/completions (HTTP {redirect}, which"
        f" would send the request again as a GET, without its body); set OPENAI_BASE_URL to"
        f" {server.origin}/v2"
    )
    assert status["status"] == "failed"
    assert {"item": item.pk, "model": "m", "message": error} in status["errors"]
    assert f"model m: {error}" in status["message"]
    assert {method for method, _ in server.requests} == {"POST"}
    assert {path for _, path in server.requests} == {"/v1/chat/completions"}
    assert len(server.requests) <= 3  # the ones in flight when the job stopped


def test_a_redirect_that_keeps_the_request_is_followed(server, generate):
    def script(path: str, attempt: int) -> tuple[int, dict[str, str], bytes]:
        if path == "/v1/chat/completions":
            return 308, {"Location": "/v2/chat/completions"}, b""
        return 200, {}, json.dumps(completion()).encode()

    server.script = script
    item, status = generate()

    assert status["status"] == "succeeded", status
    assert item.responses.get().text == "An answer."
    assert server.requests == [("POST", "/v1/chat/completions"), ("POST", "/v2/chat/completions")]


# --- 200 answers that are no chat completion -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"null", "the server's answer is not a chat completion: 'null'"),
        (b"[]", "the server's answer is not a chat completion: '[]'"),
        (b"42", "the server's answer is not a chat completion: '42'"),
        (
            b'{"detail": "no"}',
            """the server's answer is not a chat completion: '{"detail": "no"}'""",
        ),
        (b'{"error": "upstream overloaded"}', "error in a 200 answer: upstream overloaded"),
    ],
)
def test_json_that_is_no_chat_completion_fails_its_item_and_is_no_answer(
    server, generate, body, said
):
    server.script = lambda path, attempt: (200, {}, body)

    item, status = generate()

    assert status["errors"] == [{"item": item.pk, "model": "m", "message": said}]
    assert not item.responses.exists()
    # Not an answer whose usage is unknown: there was no answer.
    assert status["answers_without_usage"] == 0
    assert len(server.requests) == 1  # not asked again: it has no code saying it may pass


# --- 200 answers that ended in an error ------------------------------------------------------


def test_an_answer_that_ended_in_an_error_is_retried_and_not_stored(server, generate):
    """OpenRouter's answer when the upstream breaks mid-way: the text so far, finish_reason
    "error" and the error. The partial text is never stored; the tokens were billed."""
    broke = completion(
        "The answer is that the contr",
        "error",
        error={"code": 502, "message": "Upstream provider died"},
    )
    server.script = lambda path, attempt: (200, {}, json.dumps(broke).encode())

    item, status = generate()

    assert status["errors"] == [
        {
            "item": item.pk,
            "model": "m",
            "message": "the answer ended in an error (finish_reason: error): 502: Upstream"
            " provider died (gave up after 3 attempts)",
        }
    ]
    assert not item.responses.exists()
    assert len(server.requests) == 3
    assert (status["prompt_tokens"], status["completion_tokens"]) == (3 * 5, 3 * 6)


def test_an_answer_after_one_that_ended_in_an_error_is_stored(server, generate):
    def script(path: str, attempt: int) -> tuple[int, dict[str, str], bytes]:
        if attempt == 1:
            broke = completion("Half", "error", error={"code": 429, "message": "Rate limited"})
            return 200, {}, json.dumps(broke).encode()
        return 200, {}, json.dumps(completion()).encode()

    server.script = script
    item, status = generate()

    assert status["status"] == "succeeded", status
    response = item.responses.get()
    assert response.text == "An answer."
    assert response.generation["attempts"] == 2
    assert status["completion_tokens"] == 2 * 6  # both answers were billed


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        (
            {"finish_reason": "error", "error": {"code": 400, "message": "Bad tool call"}},
            "the answer ended in an error (finish_reason: error): 400: Bad tool call",
        ),
        ({"finish_reason": "error"}, "the answer ended in an error (finish_reason: error)"),
        (
            {"finish_reason": "stop", "error": {"message": "Stream interrupted"}},
            "the answer ended in an error (finish_reason: stop): Stream interrupted",
        ),
    ],
)
def test_an_answer_that_ended_in_an_error_that_will_not_pass_fails_its_item(
    server, generate, choice, said
):
    broke = completion("Half an answer")
    broke["choices"][0].update(choice)
    server.script = lambda path, attempt: (200, {}, json.dumps(broke).encode())

    item, status = generate()

    assert status["errors"] == [{"item": item.pk, "model": "m", "message": said}]
    assert not item.responses.exists()
    assert len(server.requests) == 1
