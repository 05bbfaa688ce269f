"""A local HTTP server that speaks the OpenAI chat completions API, for the generation tests.

The real `openai` client sends real HTTP to it. It fails on purpose for some model names (429,
500, 503, 400, 401, 408, an exhausted quota, a login page, malformed JSON, an error in a 200 body, answers a
PostgreSQL text column cannot hold, answers without usage or without text, answers cut off at
max_tokens or by a content filter), counts requests per model and prompt, keeps the images each carried, and
counts requests in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class FakeModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        # Requests after the first `hold_after` wait until `released` is set, so a test can stop
        # a run at a known point instead of racing it against the clock.
        self.hold_after: int | None = None
        self.released = threading.Event()
        self.requests = 0
        # The image parts each request carried, by model and prompt: (role, data URL) each.
        self.images: dict[tuple[str, str], list[tuple[str, str]]] = {}
        # The messages of each model's last request, as sent.
        self.last_messages: dict[str, list[dict[str, Any]]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def _text(content: str | list[dict[str, Any]]) -> str:
    """A message's text: its content, or the text parts of a content of parts."""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(
        self,
        status: int,
        body: dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _trickle(
        self, body: bytes, *, pause: float, padding: int, status: int = 200, **headers: str
    ) -> None:
        """An answer whose body comes a byte of whitespace every `pause` seconds, `padding` of
        them, then `body`: each read gets something well within any read timeout."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(padding + len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for _ in range(padding):
                self.wfile.write(b" ")
                time.sleep(pause)
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        model = request["model"]
        prompt = _text(request["messages"][-1]["content"])
        server = self.server
        with server.lock:
            server.last_messages[model] = request["messages"]
            server.images[(model, prompt)] = [
                (m["role"], part["image_url"]["url"])
                for m in request["messages"]
                if isinstance(m["content"], list)
                for part in m["content"]
                if part["type"] == "image_url"
            ]
            server.calls[(model, prompt)] += 1
            attempt = server.calls[(model, prompt)]
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            server.requests += 1
            held = server.hold_after is not None and server.requests > server.hold_after
        try:
            if held:
                server.released.wait(timeout=60)
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": "no such route"}})
            if model == "rate-limited" and attempt == 1:
                return self._send(
                    429,
                    {"error": {"message": "slow down", "type": "rate_limit"}},
                    {"Retry-After": "0"},
                )
            if model == "flaky" and attempt <= 2:
                return self._send(500, {"error": {"message": "upstream hiccup"}})
            if model == "down":
                return self._send(503, {"error": {"message": "overloaded"}})
            if model == "unknown":
                return self._send(400, {"error": {"message": "model 'unknown' does not exist"}})
            # Other servers' error bodies: text-generation-inference's, FastAPI's, a proxy's page.
            if model == "tgi-error":
                error = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096"
                return self._send(422, {"error": error, "error_type": "validation"})
            if model == "fastapi-error":
                detail = [{"loc": ["body", "messages"], "msg": "field required"}]
                return self._send(422, {"detail": detail})
            if model == "html-error":
                page = b"<html>\n<body><h1>413 Request Entity Too Large</h1>\n</body></html>"
                return self._send(413, page, content_type="text/html")
            if model == "nul-error":
                return self._send(400, {"error": {"message": "no such model:\u0000 nul-error"}})
            # What every item would meet: the job stops at the first.
            if model == "bad-key":
                return self._send(
                    401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}
                )
            if model == "no-quota":
                error = {"message": "You exceeded your current quota", "code": "insufficient_quota"}
                return self._send(429, {"error": {**error, "type": "insufficient_quota"}})
            if model == "timeout-once" and attempt == 1:
                return self._send(
                    408, {"error": {"message": "request timeout"}}, {"Retry-After": "-3"}
                )
            if model == "broken-json":  # JSON said, and cut short
                return self._send(200, b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mess')
            if model == "latin-1-json":  # JSON in another encoding than UTF-8
                return self._send(200, b'{"note": "caf\xe9"}')
            if model == "login-page":  # a proxy's sign-in page where the API should be
                return self._send(200, b"<html>Sign in</html>", content_type="text/html")
            if model == "gateway-error":  # an error in a 200 body, as OpenRouter sends some
                return self._send(200, {"error": {"message": "upstream failed", "code": 502}})
            # A NUL character, which a PostgreSQL text column cannot hold: in the answer, or
            # in the model's name, which goes into the response's generation record.
            # A lone surrogate (an unpaired \\ud800 escape in the JSON), which is not a
            # character: PostgreSQL refuses it in text and in JSON alike.
            content = {
                "nul": f"{model} answers:\u0000 {prompt}",
                "surrogate": f"{model} answers:\ud800 {prompt}",
                "rambles": "and so on " * 100_001,  # over a response's 1,000,000 characters
                "blank": "  \n\n ",  # whitespace and nothing else
            }.get(model)
            answered_by = {
                "nul-name": "nul\u0000name",
                "surrogate-name": "surrogate\udfffname",
            }.get(model, model)
            words = len(" ".join(_text(m["content"]) for m in request["messages"]).split())
            usage: dict[str, Any] | None = {
                "prompt_tokens": words,
                "completion_tokens": 7,
                "total_tokens": words + 7,
            }
            finish_reason = "stop"
            if model == "no-usage":  # some servers report none
                usage = None
            if model == "null-usage":
                usage = {"prompt_tokens": None, "completion_tokens": None}
            if model == "huge-usage":  # a count no answer has, past what a bigint holds
                usage = {"prompt_tokens": 10**19, "completion_tokens": 7}
            if model == "thinks-too-long":  # tokens spent (and billed), no text
                content, finish_reason = None, "length"
            if model == "cut-off":  # text that stops at max_tokens, mid-sentence
                finish_reason = "length"
            if model == "filtered":  # text a content filter stopped
                finish_reason = "content_filter"
            answer = {
                "id": f"chatcmpl-{attempt}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": answered_by,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": (
                                None
                                if model == "thinks-too-long"
                                else content or f"{model} answers: {prompt}"
                            ),
                        },
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if model == "parts-content":  # as Mistral's reasoning models answer
                answer["choices"][0]["message"]["content"] = [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm."}]},
                    {"type": "text", "text": f"{model} answers: "},
                    {"type": "text", "text": prompt},
                ]
            if usage is not None:
                answer["usage"] = usage
            if model == "trickles":  # whitespace a byte at a time before the answer, for minutes
                return self._trickle(json.dumps(answer).encode(), pause=0.05, padding=3600)
            if model == "trickles-a-redirect":  # the same, in a redirect to where it was sent
                return self._trickle(
                    b"{}", pause=0.05, padding=3600, status=307, Location=self.path
                )
            return self._send(200, answer)
        finally:
            with server.lock:
                server.in_flight -= 1


@pytest.fixture
def fake_model_server() -> Iterator[FakeModelServer]:
    """The server, answering on a free loopback port."""
    server = FakeModelServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def model_server(fake_model_server: FakeModelServer, settings: Any) -> FakeModelServer:
    """The server, with this process's settings pointing at it: for generations run in the
    test process (tasks are eager here)."""
    settings.OPENAI_BASE_URL = fake_model_server.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.GENERATION_BACKOFF_SECONDS = 0.01
    settings.GENERATION_MAX_ATTEMPTS = 4
    settings.GENERATION_CONCURRENCY = 3
    return fake_model_server


@pytest.fixture
def import_status(api_for, engineer, pairwise_campaign, django_capture_on_commit_callbacks):
    """POST a file to the pairwise campaign's imports (its job run at once); returns the
    import's status after its job."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = api_for(engineer)

    def send(name: str, content: bytes, **fields: Any) -> dict[str, Any]:
        with django_capture_on_commit_callbacks(execute=True):
            res = client.post(
                f"/api/v1/campaigns/{pairwise_campaign.pk}/imports/",
                {"file": SimpleUploadedFile(name, content, "application/octet-stream"), **fields},
                format="multipart",
            )
        assert res.status_code == 202, res.json()
        return client.get(f"/api/v1/imports/{res.json()['id']}/").json()

    return send
