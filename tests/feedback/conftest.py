"""A local HTTP server that speaks the OpenAI chat completions API, for the generation tests.

The real `openai` client sends real HTTP to it. It fails on purpose for some model names (429,
500, 503, 400, answers a PostgreSQL text column cannot hold), counts requests per model and
prompt, and counts requests in flight.
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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        model = request["model"]
        prompt = request["messages"][-1]["content"]
        server = self.server
        with server.lock:
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
            if model == "nul-error":
                return self._send(400, {"error": {"message": "no such model:\u0000 nul-error"}})
            # A NUL character, which a PostgreSQL text column cannot hold: in the answer, or
            # in the model's name, which goes into the response's generation record.
            # A lone surrogate (an unpaired \\ud800 escape in the JSON), which is not a
            # character: PostgreSQL refuses it in text and in JSON alike.
            content = {
                "nul": f"{model} answers:\u0000 {prompt}",
                "surrogate": f"{model} answers:\ud800 {prompt}",
            }.get(model)
            answered_by = {
                "nul-name": "nul\u0000name",
                "surrogate-name": "surrogate\udfffname",
            }.get(model, model)
            words = len(" ".join(m["content"] for m in request["messages"]).split())
            return self._send(
                200,
                {
                    "id": f"chatcmpl-{attempt}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": answered_by,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": content or f"{model} answers: {prompt}",
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": words,
                        "completion_tokens": 7,
                        "total_tokens": words + 7,
                    },
                },
            )
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
