"""The demo's database, SQLite, end to end through the REST API: run by test_sqlite_path.py.

`make run` serves the demo on SQLite, where claims, heartbeats, submits, lease expiry, file
imports and dataset builds take the portable ORM paths instead of PostgreSQL's single
statements. This script runs in a process of its own (Django reads DATABASE_URL once) and exits
non-zero with a message at the first rule that does not hold.

    python tests/e2e/sqlite_path.py <folder>
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def main(folder: Path) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{folder / 'demo.sqlite3'}",
        MEDIA_ROOT=str(folder / "media"),
        DEBUG="1",
        CELERY_BROKER_URL="",
        SECURE_SSL_REDIRECT="0",
        DJANGO_SETTINGS_MODULE="feedback.settings",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from feedback.models import Item, User
    from feedback.services import api_key_create
    from reviews.models import Assignment, Review
    from reviews.services import assignments_expire_due

    check(connection.vendor == "sqlite", f"expected SQLite, got {connection.vendor}")
    call_command("migrate", verbosity=0)
    call_command("demo", verbosity=0)
    call_command("demo", verbosity=0)  # a second run adds nothing and fails nothing

    engineer = User.objects.get(email="engineer@demo.test")
    experts = [
        User.objects.create_user(email=f"sqlite-{n}@example.test", role="expert") for n in range(3)
    ]

    def api(user: User) -> APIClient:
        # A real API key, as a demo user's client sends it.
        _, raw = api_key_create(user=user, name="sqlite path")
        client = APIClient(HTTP_HOST="127.0.0.1")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    eng = api(engineer)

    def new_campaign(name: str, overlap: int) -> int:
        res = eng.post(
            "/api/v1/campaigns/",
            {"name": name, "kind": "pairwise", "status": "active", "overlap": overlap},
            format="json",
        )
        check(res.status_code == 201, f"campaign {name}: {res.status_code} {res.content[:300]!r}")
        return int(res.json()["id"])

    campaign = new_campaign("SQLite path", 2)
    items = [
        {
            "external_id": f"s-{n}",
            "prompt": f"Question {n}?",
            "responses": [
                {"model": "model-a", "text": f"A{n}"},
                {"model": "model-b", "text": f"B{n}"},
            ],
        }
        for n in range(3)
    ]
    res = eng.post(f"/api/v1/campaigns/{campaign}/items/", items, format="json")
    check(res.status_code == 201, f"items: {res.status_code} {res.content[:300]!r}")
    res = eng.post(f"/api/v1/campaigns/{campaign}/items/", items[:1], format="json")
    check(res.json().get("created") == 0, f"a duplicate was stored again: {res.json()}")

    first, second, third = (api(e) for e in experts)
    claim = first.post(f"/api/v1/campaigns/{campaign}/next/").json()
    again = first.post(f"/api/v1/campaigns/{campaign}/next/").json()
    check(
        claim["assignment"]["id"] == again["assignment"]["id"],
        "an expert holding a live claim got a second one",
    )
    skipped_item = claim["item"]["id"]
    res = first.post(
        f"/api/v1/assignments/{claim['assignment']['id']}/skip/",
        {"reason": "outside_expertise"},
        format="json",
    )
    check(res.status_code == 200, f"skip: {res.status_code} {res.content[:300]!r}")

    # Every expert reviews until the queue is dry for them; overlap 2 of 3 items is 6 reviews.
    for client in (first, second, third):
        while True:
            res = client.post(f"/api/v1/campaigns/{campaign}/next/")
            if res.status_code == 204:
                break
            body = res.json()
            if client is first:
                check(body["item"]["id"] != skipped_item, "a skipped item was offered again")
            # Blind and shuffled: pick by text, so every expert agrees (A over B).
            chosen = next(r["id"] for r in body["item"]["responses"] if r["text"].startswith("A"))
            url = f"/api/v1/assignments/{body['assignment']['id']}/submit/"
            answer = {"preference": {"chosen": chosen, "strength": 2}}
            made = client.post(url, answer, format="json")
            check(made.status_code == 201, f"submit: {made.status_code} {made.content[:300]!r}")
            repeat = client.post(url, answer, format="json")
            check(
                repeat.status_code == 200 and repeat.json()["id"] == made.json()["id"],
                "a repeated submit did not answer with the stored review",
            )
    reviews = Review.objects.filter(campaign_id=campaign)
    check(reviews.count() == 6, f"expected 6 reviews, got {reviews.count()}")
    for item in {r.item_id for r in reviews}:
        per_item = reviews.filter(item_id=item)
        check(per_item.count() == 2, f"item {item} has {per_item.count()} reviews, not 2")
        check(
            per_item.values("expert").distinct().count() == 2,
            f"item {item} was reviewed twice by one expert",
        )

    # A lease that runs out gives its slot back, and a late submit saves nothing (409).
    res = eng.post(
        f"/api/v1/campaigns/{campaign}/items/",
        [{**items[0], "external_id": "late", "prompt": "Late?"}],
        format="json",
    )
    check(res.status_code == 201, f"late item: {res.status_code}")
    late = first.post(f"/api/v1/campaigns/{campaign}/next/").json()
    Assignment.objects.filter(pk=late["assignment"]["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    check(assignments_expire_due() == 1, "the expired lease was not freed")
    res = first.post(
        f"/api/v1/assignments/{late['assignment']['id']}/submit/",
        {"preference": {"chosen": late["item"]["responses"][0]["id"]}},
        format="json",
    )
    check(res.status_code == 409, f"a late submit answered {res.status_code}, not 409")

    # A dataset version, built by the (eager) task on SQLite.
    res = eng.post(
        "/api/v1/datasets/",
        {
            "name": "sqlite-prefs",
            "campaigns": [campaign],
            "format": "dpo",
            "aggregation": "all_pairs",
        },
        format="json",
    )
    check(res.status_code == 201, f"dataset: {res.status_code} {res.content[:300]!r}")
    dataset = res.json()["id"]
    res = eng.post(f"/api/v1/datasets/{dataset}/versions/")
    check(res.status_code == 202, f"build: {res.status_code} {res.content[:300]!r}")
    version = eng.get(f"/api/v1/datasets/{dataset}/versions/1/").json()
    check(version["status"] == "ready", f"the version is {version['status']}: {version}")
    total = version["counts"]["total_rows"]
    # all_pairs: one row per distinct ordered pair; both experts of each item stated A over B.
    check(total == 3, f"expected 3 dpo rows (one agreed pair per item), got {total}")

    # A JSONL file imported through the API: its task runs eagerly (no broker) after the commit,
    # on SQLite's paths, so the import is done when the upload answers.
    imported = new_campaign("SQLite import", 1)
    lines = "".join(
        json.dumps({**item, "external_id": f"file-{item['external_id']}"}) + "\n"
        for item in items[:2]
    )
    res = eng.post(
        f"/api/v1/campaigns/{imported}/imports/",
        {"file": SimpleUploadedFile("items.jsonl", lines.encode())},
        format="multipart",
    )
    check(res.status_code == 202, f"import: {res.status_code} {res.content[:300]!r}")
    job = eng.get(f"/api/v1/imports/{res.json()['id']}/").json()
    check(job["status"] == "succeeded", f"the import is {job['status']}: {job}")
    check((job["rows"], job["created"]) == (2, 2), f"the import counted {job}")
    stored = Item.objects.filter(campaign_id=imported)
    check(
        sorted(stored.values_list("external_id", flat=True)) == ["file-s-0", "file-s-1"],
        f"the imported items are {list(stored.values_list('external_id', flat=True))}",
    )
    check(
        all(item.responses.count() == 2 for item in stored),
        "an imported item lacks its two responses",
    )

    # A heartbeat on a claim 40 s old whose lease ends in a minute: it counts those 40 s and
    # extends the lease; the submit is credited the observed time, not the 600 s it states.
    beat = third.post(f"/api/v1/campaigns/{imported}/next/").json()
    assignment_id = beat["assignment"]["id"]
    Assignment.objects.filter(pk=assignment_id).update(
        claimed_at=timezone.now() - timedelta(seconds=40),
        last_seen_at=timezone.now() - timedelta(seconds=40),
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    res = third.post(f"/api/v1/assignments/{assignment_id}/heartbeat/", {}, format="json")
    check(res.status_code == 200, f"heartbeat: {res.status_code} {res.content[:300]!r}")
    claimed = Assignment.objects.get(pk=assignment_id)
    check(
        claimed.lease_expires_at > timezone.now() + timedelta(minutes=20),
        f"the heartbeat left the lease ending at {claimed.lease_expires_at}",
    )
    check(claimed.observed_seconds >= 40, f"the heartbeat counted {claimed.observed_seconds} s")
    chosen = next(r["id"] for r in beat["item"]["responses"] if r["text"].startswith("A"))
    res = third.post(
        f"/api/v1/assignments/{assignment_id}/submit/",
        {"preference": {"chosen": chosen}, "active_seconds": 600},
        format="json",
    )
    check(res.status_code == 201, f"submit after a heartbeat: {res.status_code} {res.content!r}")
    review = Review.objects.get(assignment_id=assignment_id)
    check(
        40 <= review.active_seconds < 600,
        f"the review was credited {review.active_seconds} s, not the observed time",
    )
    # A claim of one's own whose lease ran out, behind more due claims than the claim's
    # expiry batch takes: coming back gets a live claim, never the dead one again.
    stale_campaign = new_campaign("SQLite stale claim", 1)
    res = eng.post(f"/api/v1/campaigns/{stale_campaign}/items/", items[:2], format="json")
    check(res.status_code == 201, f"stale claim items: {res.status_code}")
    dead = second.post(f"/api/v1/campaigns/{stale_campaign}/next/").json()["assignment"]["id"]
    long_ago = timezone.now() - timedelta(hours=1)
    Assignment.objects.filter(pk=dead).update(lease_expires_at=long_ago)
    item = Assignment.objects.get(pk=dead).item_id
    for n in range(50):  # due earlier than it; gold, so their expiry gives no slot back
        Assignment.objects.create(
            campaign_id=stale_campaign,
            item_id=item,
            expert=User.objects.create_user(email=f"sqlite-due-{n}@example.test", role="expert"),
            claimed_at=long_ago - timedelta(hours=1),
            last_seen_at=long_ago - timedelta(hours=1),
            lease_expires_at=long_ago - timedelta(minutes=1),
            response_order=[],
            is_gold=True,
        )
    back = second.post(f"/api/v1/campaigns/{stale_campaign}/next/")
    check(back.status_code == 200, f"coming back: {back.status_code} {back.content[:300]!r}")
    check(back.json()["assignment"]["id"] != dead, "the expert was handed their dead claim again")
    check(
        Assignment.objects.get(pk=dead).status == Assignment.Status.EXPIRED,
        "the dead claim was not expired",
    )
    # A long write (an import) holds the database: reads go on meanwhile, through the pages
    # and the API, instead of waiting for it and failing with "database is locked".
    import sqlite3

    writer = sqlite3.connect(str(folder / "demo.sqlite3"), timeout=0, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE feedback_campaign SET name = name || ' (renamed)'")
    try:
        read = eng.get(f"/api/v1/campaigns/{campaign}/")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    check(read.status_code == 200, f"a read during a write: {read.status_code} {read.content!r}")
    check(read.json()["name"] == "SQLite path", "a read during a write saw the uncommitted name")
    print(
        f"ok: 6 reviews, 1 expired lease, a ready version of {total} rows, "
        "an import of 2 items, a heartbeat before a submit, a dead claim not handed back, "
        "a read during a write"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
