"""The demo's database, SQLite, end to end through the REST API: run by test_sqlite_path.py.

`make run` serves the demo on SQLite, where claims, submits, lease expiry and dataset builds
take the portable ORM paths instead of PostgreSQL's single statements. This script runs in a
process of its own (Django reads DATABASE_URL once) and exits non-zero with a message at the
first rule that does not hold.

    python tests/e2e/sqlite_path.py <folder>
"""

from __future__ import annotations

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
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from feedback.models import User
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
        client = APIClient(HTTP_HOST="127.0.0.1")
        client.force_authenticate(user)
        return client

    eng = api(engineer)
    res = eng.post(
        "/api/v1/campaigns/",
        {"name": "SQLite path", "kind": "pairwise", "status": "active", "overlap": 2},
        format="json",
    )
    check(res.status_code == 201, f"campaign: {res.status_code} {res.content[:300]!r}")
    campaign = res.json()["id"]
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
    print(f"ok: 6 reviews, 1 expired lease, a ready version of {total} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
