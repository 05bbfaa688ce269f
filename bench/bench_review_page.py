"""Review page: server time to render `GET /review/a/<id>/` for a 50 KB legal brief and a 50 KB PR.

What is timed is Django's whole request path in this process (middleware, session and
user lookup, the queries, markdown/diff rendering and sanitising, the template), through
django.test.Client without the test instrumentation: what a gunicorn worker spends on the
request minus the socket. DEBUG is off, so queries are not recorded.

Two states per page:
* warm: the steady state; the item's rendered HTML is in the process's render cache
  (feedback.rendering keeps the last 512 long texts by digest), as it is for every expert
  after the first who opens the same item.
* cold: the render cache is emptied before every request, so each one parses markdown,
  highlights the diff and sanitises from scratch (the first expert to open an item).

The items are the demo data's own brief and pull requests, repeated (with renumbered clauses
and files) until the context is 50 KB. Data lives in a dedicated database
(`<DATABASE_URL's name>_bench_review_page`, dropped and re-created).

Then the same page on a large campaign (LARGE_ITEMS items, a million by default, 0 skips it,
each reviewed three times by six experts, loaded with COPY as in `claims`, and a few items left
open for the expert to claim): the page, the home page, the history page of one of the six and
a lead's page of the campaign's reviews (warm), and the campaign's progress counted afresh
(what beat pays to keep it: reviews.selectors.campaigns_progress). A page's cost must not grow
with the campaign.

Target (issue): p95 <= 50 ms for the 50 KB brief.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import results

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "feedback" / "demo_data"
WARM = int(os.environ.get("BENCH_REVIEW_PAGE_WARM", "300"))
COLD = int(os.environ.get("BENCH_REVIEW_PAGE_COLD", "60"))
TARGET_BYTES = 50 * 1024
LARGE_ITEMS = int(os.environ.get("BENCH_REVIEW_PAGE_LARGE_ITEMS", "1000000"))


def _database_url() -> str:
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/feedback"
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit("Benchmarks run on PostgreSQL: set DATABASE_URL.")
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_bench_review_page"))


def _fresh_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "feedback.settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-used-anywhere-else-0123456789")
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    os.environ["STATIC_MANIFEST"] = "0"
    os.environ["CELERY_BROKER_URL"] = ""
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("MEDIA_ROOT", "var/bench-media")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _big_brief() -> dict[str, Any]:
    """The first demo brief, its sections repeated as further numbered clauses up to 50 KB."""
    item = json.loads((DEMO / "contract_clause_review.json").read_text())[0]
    context = dict(item["context"])
    base = list(context["sections"])
    sections = list(base)
    round_no = 1
    while len(json.dumps(sections).encode()) < TARGET_BYTES:
        round_no += 1
        for section in base:
            sections.append(
                {"heading": f"Schedule {round_no}, {section['heading']}", "text": section["text"]}
            )
    context["sections"] = sections
    item["context"] = context
    item["external_id"] = "bench-brief"
    return item


def _big_pr() -> dict[str, Any]:
    """Demo pull requests' diffs joined into one 50 KB diff, the first PR's reviews with it."""
    items = json.loads((DEMO / "code_pr_review.json").read_text())
    first = dict(items[0])
    diffs: list[str] = []
    n = 0
    while len("".join(diffs).encode()) < TARGET_BYTES:
        diff = items[n % len(items)]["context"]["diff"]
        if n >= len(items):
            diff = diff.replace(" b/", f" b/copy{n}/").replace(" a/", f" a/copy{n}/")
            diff = diff.replace("+++ b/", f"+++ b/copy{n}/").replace("--- a/", f"--- a/copy{n}/")
        diffs.append(diff if diff.endswith("\n") else diff + "\n")
        n += 1
    first["context"] = {**first["context"], "diff": "".join(diffs)}
    first["external_id"] = "bench-pr"
    return first


def _seed() -> dict[str, Any]:
    from feedback import services as feedback_services
    from feedback.management.commands.demo import CAMPAIGNS
    from feedback.models import Campaign, User
    from reviews import services

    admin = feedback_services.user_add(email="bench-admin@bench.test", role=User.Role.ADMIN)
    expert = feedback_services.user_add(
        email="bench-expert@bench.test", role=User.Role.EXPERT, skills=["contracts", "python"]
    )
    out: dict[str, Any] = {"expert": expert, "pages": {}}
    for slug, item in [("contract-clause-review", _big_brief()), ("code-pr-review", _big_pr())]:
        spec = next(c for c in CAMPAIGNS if c["slug"] == slug)
        campaign = feedback_services.campaign_create(
            actor=admin,
            data=feedback_services.CampaignInput(
                name=spec["name"],
                slug=spec["slug"],
                kind=spec["kind"],
                instructions=spec["instructions"],
                rubric=spec["rubric"],
                overlap=1,
                required_skills=spec["skills"],
                pay=spec["pay"],
                acceptance=spec["acceptance"],
                status=Campaign.Status.ACTIVE,
            ),
        )
        parsed = feedback_services.items_parse_batch(campaign=campaign, raw_items=[item])
        feedback_services.items_add(actor=admin, campaign=campaign, items=parsed)
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert assignment is not None
        out["pages"][slug] = {
            "assignment": assignment.pk,
            "context_bytes": len(json.dumps(item["context"]).encode()),
        }
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "count": len(ordered),
    }


def _measure(client: Any, url: str, *, count: int, cold: bool) -> tuple[dict[str, float], int, int]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from feedback import rendering

    samples = []
    cpu = []
    size = 0
    for _ in range(count):
        if cold:
            rendering._cache = rendering._RenderCache(size=512)
        start, start_cpu = time.perf_counter(), time.thread_time()
        response = client.get(url)
        samples.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
        assert response.status_code == 200, response.status_code
        size = len(response.content)
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    stats = _stats(samples)
    # CPU time of this thread alone: what the request costs when the machine is shared.
    stats["cpu_p95_ms"] = _stats(cpu)["p95_ms"]
    return stats, size, len(queries)


LARGE_SLUG = "large-pairwise"
HISTORY_EXPERT = "bench-reviewer-0@bench.test"


def _seed_large(expert: Any) -> tuple[Any, int]:
    """A pairwise campaign of LARGE_ITEMS items reviewed three times each by six other experts,
    plus ten open items, the first of them claimed by `expert`: the campaign and the claim's
    id."""
    from django.db import connection

    from bench.bench_claims import (
        OVERLAP,
        _copy_items,
        reviewed_campaign,
        settle_after_copy,
    )
    from feedback.models import Campaign, Item, User
    from reviews import services

    reviewers = [
        User.objects.create(email=f"bench-reviewer-{n}@bench.test", role=User.Role.EXPERT).pk
        for n in range(OVERLAP * 2)
    ]
    base = Item.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    connection.ensure_connection()
    with connection.connection.cursor() as copying:  # psycopg's own, for COPY
        campaign = reviewed_campaign(
            copying,
            name="Large pairwise",
            slug=LARGE_SLUG,
            status=Campaign.Status.ACTIVE,
            owner=User.objects.get(email="bench-admin@bench.test"),
            base=base,
            items=LARGE_ITEMS,
            experts=reviewers,
        )
        _copy_items(copying, campaign.pk, base + LARGE_ITEMS, 10, open_slots=OVERLAP)
    settle_after_copy(top_item=base + LARGE_ITEMS + 10)
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return campaign, assignment.pk


def _large(client: Any, expert: Any) -> dict[str, Any]:
    from django.test import Client

    from feedback.models import User
    from reviews.models import Review
    from reviews.selectors import campaigns_progress, progress_counts

    started = time.perf_counter()
    campaign, assignment_id = _seed_large(expert)
    out: dict[str, Any] = {
        "items": LARGE_ITEMS,
        "reviews": Review.objects.filter(campaign=campaign).count(),
        "load_seconds": round(time.perf_counter() - started, 1),
    }
    # What counting the campaign's progress costs: what beat pays every
    # PROGRESS_REFRESH_SECONDS (and a page, without beat, once the kept counts are too old).
    recount = []
    for _ in range(5):
        start = time.perf_counter()
        progress_counts(campaign_ids=[campaign.pk])
        recount.append(time.perf_counter() - start)
    out["progress_recount"] = _stats(recount)
    campaigns_progress(campaigns=[campaign], expert=expert)  # kept, as beat would keep them
    # The history page of one of the campaign's reviewers, who made a sixth of its reviews,
    # and a lead's reading of the campaign's reviews, newest first.
    reviewer = Client()
    reviewer.force_login(User.objects.get(email=HISTORY_EXPERT))
    lead = Client()
    lead.force_login(User.objects.create(email="bench-lead@bench.test", role=User.Role.LEAD))
    for name, path, who in [
        ("page", f"/review/a/{assignment_id}/", client),
        ("home", "/", client),
        ("history", "/review/history/", reviewer),
        ("lead_reviews", f"/review/campaigns/{campaign.pk}/reviews/", lead),
    ]:
        for _ in range(10):
            who.get(path)
        warm, size, queries = _measure(who, path, count=WARM, cold=False)
        out[name] = {"html_kb": round(size / 1024, 1), "queries": queries, "warm": warm}
    out["history"]["reviews_of_its_expert"] = Review.objects.filter(
        expert__email=HISTORY_EXPERT
    ).count()
    return out


def main() -> dict[str, Any]:
    url = _database_url()
    _fresh_database(url)
    _setup_django(url)
    from django.test import Client

    seeded = _seed()
    client = Client()
    client.force_login(seeded["expert"])
    result: dict[str, Any] = {
        "what": "server time of GET /review/a/<id>/ in-process (Django handler, DEBUG off)",
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "warm_requests": WARM,
        "cold_requests": COLD,
        "target": "p95 <= 50 ms for the 50 KB brief",
        "pages": {},
    }
    for slug, page in seeded["pages"].items():
        path = f"/review/a/{page['assignment']}/"
        for _ in range(10):  # warm-up: imports, connections, the template cache
            client.get(path)
        warm, size, queries = _measure(client, path, count=WARM, cold=False)
        cold, _, _ = _measure(client, path, count=COLD, cold=True)
        result["pages"][slug] = {
            "context_kb": round(page["context_bytes"] / 1024, 1),
            "html_kb": round(size / 1024, 1),
            "queries": queries,
            "warm": warm,
            "cold": cold,
        }
    if LARGE_ITEMS:
        result["large_campaign"] = _large(client, seeded["expert"])
    # The machine may be shared; the load says how much the wall times can be trusted.
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["cores"] = os.cpu_count()
    brief = result["pages"]["contract-clause-review"]
    result["meets_target"] = brief["warm"]["p95_ms"] <= 50 and brief["cold"]["p95_ms"] <= 50
    results.write("review_page", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
