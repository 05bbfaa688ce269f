"""The whole vertical slice through the production processes: gunicorn, a Celery worker on
Redis and Celery beat against PostgreSQL, driven over real HTTP like an ML engineer and
three experts would (see tests/e2e/stack.py for how the processes are started)."""

from __future__ import annotations

import hashlib
import json
import re
import socket

import pytest

from tests.e2e.stack import Http, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

PASSWORD = "e2e-expert-password-7"


def _items(prefix: str, count: int) -> list[dict]:
    return [
        {
            "external_id": f"{prefix}-{n}",
            "prompt": [
                {"role": "system", "content": "You review pull requests."},
                {"role": "user", "content": f"Review change {prefix}-{n}: is the lock released?"},
            ],
            "context": {
                "kind": "code_pr",
                "repo": "org/service",
                "diff": "--- a/x.py\n+++ b/x.py\n",
            },
            "responses": [
                {"model": "model-a", "text": f"Strong review {n}: the lock leaks on error."},
                {"model": "model-b", "text": f"Weak review {n}: looks good to me."},
            ],
            "metadata": {"domain": "python"},
        }
        for n in range(count)
    ]


def _campaign(api: Http, name: str, overlap: int) -> int:
    res = api.post(
        "/api/v1/campaigns/",
        json={"name": name, "kind": "pairwise", "status": "active", "overlap": overlap},
    )
    assert res.status_code == 201, res.text
    return int(res.json()["id"])


def _pick(payload: dict, prefer_strong: bool) -> int:
    # Review is blind: the expert sees labels and texts only, so choose by the text.
    for response in payload["item"]["responses"]:
        if response["text"].startswith("Strong") == prefer_strong:
            return int(response["id"])
    raise AssertionError(f"no matching response in {payload}")


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, Http]:
    """An engineer and four experts, made with add_user and create_api_key, each with a key."""
    stack.add_user("engineer@e2e.test", "engineer")
    clients = {"engineer": stack.api("engineer@e2e.test")}
    for name in ("ana", "ben", "cy", "dee"):
        email = f"{name}@e2e.test"
        stack.add_user(email, "expert", password=PASSWORD)
        clients[name] = stack.api(email)
    return clients


def test_it_runs_claim_submit_and_a_dataset_build_through_the_production_processes(
    stack: Stack, people: dict[str, Http], tmp_path
):
    engineer = people["engineer"]
    experts = {name: people[name] for name in ("ana", "ben", "cy")}

    campaign_id = _campaign(engineer, "E2E code review", overlap=3)
    pushed = engineer.post(f"/api/v1/campaigns/{campaign_id}/items/", json=_items("pr", 4))
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["created"] == 4

    # Two of three experts prefer the strong review: a clear majority on every item.
    for name, api in experts.items():
        submitted = 0
        while True:
            claim = api.post(f"/api/v1/campaigns/{campaign_id}/next/")
            if claim.status_code == 204:
                break
            assert claim.status_code == 200, claim.text
            payload = claim.json()
            assert all("model" not in r for r in payload["item"]["responses"]), "blind review"
            body = {
                "preference": {"chosen": _pick(payload, name != "cy"), "strength": 2},
                "rationale": "The strong review finds the leaked lock.",
                "active_seconds": 30,
            }
            sub = api.post(f"/api/v1/assignments/{payload['assignment']['id']}/submit/", json=body)
            assert sub.status_code == 201, sub.text
            submitted += 1
        assert submitted == 4, f"{name} reviewed {submitted} items"

    dataset = engineer.post(
        "/api/v1/datasets/",
        json={
            "name": "E2E preferences",
            "campaigns": [campaign_id],
            "format": "dpo",
            "test_fraction": 0,
        },
    )
    assert dataset.status_code == 201, dataset.text
    dataset_id = dataset.json()["id"]
    queued = engineer.post(f"/api/v1/datasets/{dataset_id}/versions/")
    assert queued.status_code == 202, queued.text
    number = queued.json()["number"]

    # The web process only queued the build; the worker builds it.
    def version_done() -> dict | None:
        res = engineer.get(f"/api/v1/datasets/{dataset_id}/versions/{number}/")
        assert res.status_code == 200, res.text
        body = res.json()
        return body if body["status"] in ("ready", "failed") else None

    version = wait_until("the worker to build the dataset version", version_done, timeout=60)
    assert version["status"] == "ready", version
    assert "succeeded" in stack.process("worker").text()

    files = {f["path"]: f for f in version["files"]}
    train = files["data/train.jsonl"]
    assert train["url"].startswith(stack.base_url)
    download = engineer.get(train["url"])
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == train["sha256"]
    assert stack.http().get(train["url"]).status_code in (401, 403), "downloads need a key"

    path = tmp_path / "train.jsonl"
    path.write_bytes(download.content)
    import datasets

    rows = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert rows.num_rows == 4
    for row in rows:
        assert row["chosen"][-1]["role"] == "assistant"
        assert row["chosen"][-1]["content"].startswith("Strong review")
        assert row["rejected"][-1]["content"].startswith("Weak review")
        assert row["prompt"][0] == {"role": "system", "content": "You review pull requests."}


def test_beat_sends_the_lease_sweep_and_the_worker_frees_a_lapsed_claim(
    stack: Stack, people: dict[str, Http]
):
    engineer, slow, after = people["engineer"], people["dee"], people["ana"]
    campaign_id = _campaign(engineer, "E2E lease sweep", overlap=1)
    pushed = engineer.post(f"/api/v1/campaigns/{campaign_id}/items/", json=_items("lease", 1))
    assert pushed.status_code == 201, pushed.text
    payload = slow.post(f"/api/v1/campaigns/{campaign_id}/next/").json()
    assignment_id = payload["assignment"]["id"]
    assert after.post(f"/api/v1/campaigns/{campaign_id}/next/").status_code == 204, "slot taken"

    # The lease runs out (as if the expert walked away); nobody in the test expires it.
    stack.sql(
        "UPDATE reviews_assignment SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
        assignment_id,
    )

    def expired() -> bool:
        return (
            stack.sql("SELECT status FROM reviews_assignment WHERE id = %s", assignment_id)[0][0]
            == "expired"
        )

    wait_until("beat and the worker to expire the lapsed lease", expired, timeout=30)
    beat_log = stack.process("beat").text()
    assert "Sending due task expire-leases (reviews.tasks.expire_leases)" in beat_log
    assert re.search(
        r"Task reviews\.tasks\.expire_leases\[[\w-]+\] succeeded", stack.process("worker").text()
    )

    late = slow.post(
        f"/api/v1/assignments/{assignment_id}/submit/",
        json={"preference": {"chosen": _pick(payload, True), "strength": 1}, "active_seconds": 5},
    )
    assert late.status_code == 409, late.text
    assert after.post(f"/api/v1/campaigns/{campaign_id}/next/").status_code == 200, "slot is back"


def test_beat_has_the_worker_count_a_kept_campaign_progress_again(
    stack: Stack, people: dict[str, Http]
):
    engineer, expert = people["engineer"], people["ana"]
    campaign_id = _campaign(engineer, "E2E progress", overlap=1)
    pushed = engineer.post(f"/api/v1/campaigns/{campaign_id}/items/", json=_items("progress", 2))
    assert pushed.status_code == 201, pushed.text
    # Kept as a large campaign's would be, counted an hour ago with nothing done.
    stack.sql(
        "INSERT INTO reviews_campaignprogress (campaign_id, items, done, counted_at)"
        " VALUES (%s, 2, 0, now() - interval '1 hour')",
        campaign_id,
    )
    payload = expert.post(f"/api/v1/campaigns/{campaign_id}/next/").json()
    done = expert.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        json={"preference": {"chosen": _pick(payload, True), "strength": 1}, "active_seconds": 5},
    )
    assert done.status_code == 201, done.text

    def counted_again() -> bool:
        row = stack.sql(
            "SELECT done, counted_at > now() - interval '1 minute'"
            " FROM reviews_campaignprogress WHERE campaign_id = %s",
            campaign_id,
        )
        return row[0] == (1, True)

    wait_until("beat and the worker to count the progress again", counted_again, timeout=30)
    assert "Sending due task refresh-progress (reviews.tasks.refresh_progress)" in (
        stack.process("beat").text()
    )


def test_it_serves_health_hashed_static_files_and_security_headers(stack: Stack):
    health = stack.http().get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "broker": "ok"}

    login = stack.http().get("/accounts/login/")
    assert login.status_code == 200
    assert login.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in login.headers["content-security-policy"]
    css = re.search(r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', login.text)
    assert css, "STATIC_MANIFEST=1 links the hashed file name"
    static = stack.http().get(css.group(1), headers={"Accept-Encoding": "gzip"})
    assert static.status_code == 200
    assert static.headers["content-type"].startswith("text/css")
    assert "immutable" in static.headers["cache-control"]

    missing = stack.http().get("/no-such-page/")
    assert missing.status_code == 404
    assert "Traceback" not in missing.text, "DEBUG is off"
    assert "DEBUG = True" not in missing.text
    assert "GET /healthz" in stack.process("web").text(), "gunicorn writes an access log"


def _raw(stack: Stack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte to gunicorn (no client library tidies it), and its
    answer: status, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=15) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_odd_requests_get_the_apis_json_errors_never_a_500_page(
    stack: Stack, people: dict[str, Http]
):
    engineer = people["engineer"]
    campaign_id = _campaign(engineer, "E2E odd requests", overlap=1)
    key = engineer.key
    assert key

    # A body in chunks reaches Django as an empty one: a generation without its item_ids
    # would run over every item. Refused, naming why.
    body = json.dumps({"item_ids": [1]}).encode()
    status, headers, answer = _raw(
        stack,
        f"POST /api/v1/campaigns/{campaign_id}/generate/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n",
    )
    assert status == 411, answer
    assert headers["content-type"] == "application/json"
    assert answer.startswith(b"{"), (headers, answer)
    assert json.loads(answer)["error"]["code"] == "length_required"

    # A GET whose client says chunked carries nothing anyone reads: answered as any GET.
    status, _, answer = _raw(
        stack,
        f"GET /api/v1/campaigns/{campaign_id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n0\r\n\r\n".encode(),
    )
    assert status == 200, answer

    # An Authorization header of whitespace alone (a no-break space): no credentials.
    status, headers, answer = _raw(
        stack,
        b"GET /api/v1/campaigns/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: \xa0\r\nConnection: close\r\n\r\n",
    )
    assert status == 401, answer
    assert json.loads(answer)["error"]["code"] == "not_authenticated"

    # The scheme is case-insensitive.
    status, _, answer = _raw(
        stack,
        f"GET /api/v1/campaigns/{campaign_id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: bearer {key}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 200, answer
