"""The admin's lists of items, assignments and reviews (millions of rows at scale) count only
the rows a filter selects, never the whole table as well."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.mfa_fixtures import admin_mfa_client_fixture, admin_with_mfa_fixture  # noqa: F401
from tests.reviews.work import review_first_response

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "table"),
    [
        ("/admin/feedback/item/", "feedback_item"),
        ("/admin/reviews/assignment/", "reviews_assignment"),
        ("/admin/reviews/review/", "reviews_review"),
    ],
)
def test_a_filtered_list_does_not_count_the_whole_table(admin_mfa_client, expert, path, table):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    CampaignFactory(kind="pairwise")
    ItemFactory.create_batch(2, campaign=campaign)
    review_first_response(campaign, expert)

    with CaptureQueriesContext(connection) as queries:
        res = admin_mfa_client.get(f"{path}?campaign__id__exact={campaign.pk}")

    assert res.status_code == 200
    counts = [q["sql"] for q in queries if re.search(rf'COUNT\(\*\).*FROM "{table}"', q["sql"])]
    assert counts, "the list's own count was not seen"
    assert all("WHERE" in sql for sql in counts), counts
