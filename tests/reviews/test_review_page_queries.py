"""The review page costs the same number of queries whatever the item's size."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from feedback.models import Response
from reviews import services
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db

RUBRIC = [
    {"key": k, "label": k.title(), "min": 1, "max": 5, "anchors": {"1": "bad", "5": "good"}}
    for k in ("accuracy", "coverage", "drafting")
]


def _brief(kb: int) -> dict:
    paragraph = (
        "The Supplier's total liability under or in connection with this Agreement, whether in "
        "contract, tort (including negligence) or otherwise, shall not exceed the Fees paid in the "
        "twelve months before the claim. "
    )
    sections = []
    size = 0
    n = 0
    while size < kb * 1024:
        n += 1
        text = paragraph * 4
        sections.append({"heading": f"{n // 5 + 1}.{n % 5 + 1} Clause {n}", "text": text})
        size += len(text)
    return {
        "kind": "legal_brief",
        "title": "Master services agreement",
        "clause_under_review": "9.2",
        "sections": sections,
    }


def _diff(files: int) -> str:
    out = []
    for f in range(files):
        out.append(f"--- a/pkg/mod{f}.py\n+++ b/pkg/mod{f}.py\n@@ -1,40 +1,40 @@\n")
        for line in range(40):
            out.append(f"-old_{line} = compute({line})\n+new_{line} = compute({line}, safe=True)\n")
    return "".join(out)


def _queries_for_page(client, assignment) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        res = client.get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 200
    return len(queries), len(res.content)


@pytest.mark.parametrize("kind", ["correction", "pairwise", "rating", "ranking"])
def test_it_runs_the_same_few_queries_for_a_small_and_a_50_kb_item(
    expert, django_assert_max_num_queries, kind
):
    rubric = RUBRIC if kind in ("rating", "correction") else []
    responses = {"pairwise": 2, "ranking": 5}.get(kind, 1)
    client = Client()
    client.force_login(expert)

    small_campaign = CampaignFactory(kind=kind, rubric=rubric)
    ItemFactory(campaign=small_campaign, responses=responses)
    small = services.assignment_claim(campaign=small_campaign, expert=expert)

    big_campaign = CampaignFactory(kind=kind, rubric=rubric, instructions="Read it all. " * 500)
    big_item = ItemFactory(
        campaign=big_campaign,
        responses=0,
        context=_brief(50) if kind != "pairwise" else {"kind": "code_pr", "diff": _diff(12)},
    )
    for position in range(responses):
        Response.objects.create(
            item=big_item, model_name=f"m{position}", text="word " * 4000, position=position
        )
    big = services.assignment_claim(campaign=big_campaign, expert=expert)
    assert small is not None
    assert big is not None

    with django_assert_max_num_queries(10):
        client.get(reverse("review-page", args=[big.pk]))
    small_queries, small_size = _queries_for_page(client, small)
    big_queries, big_size = _queries_for_page(client, big)
    assert big_size > small_size + 50_000, "the large item really was large"
    assert small_queries == big_queries
