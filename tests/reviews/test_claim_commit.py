"""A claim's commit does not wait for the disk unless CLAIM_SYNCHRONOUS_COMMIT says so; a
submit's always does. Counted with PostgreSQL's own statistics: a commit that waits for its
WAL writes it itself (pg_stat_wal.wal_write), one that does not leaves it to the WAL writer,
which writes a few times a second."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from feedback.models import User
from reviews import services
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)  # claims in their own transactions

CLAIMS = 40


def _wal_writes() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # this session's counts, at once
        cursor.execute("SELECT wal_write FROM pg_stat_wal")
        return int(cursor.fetchone()[0])


@pytest.fixture
def experts_and_campaign():
    campaign = CampaignFactory(overlap=1)
    ItemFactory.create_batch(CLAIMS, campaign=campaign)
    # No password: hashing one takes a good part of a second.
    experts = [UserFactory(role=User.Role.EXPERT, password=None) for _ in range(CLAIMS)]
    return experts, campaign


@pytest.mark.parametrize("durable", [False, True])
def test_a_claims_commit_waits_for_the_disk_only_when_set_to(
    settings, experts_and_campaign, durable
):
    settings.CLAIM_SYNCHRONOUS_COMMIT = durable
    experts, campaign = experts_and_campaign
    before = _wal_writes()

    for expert in experts:
        assert services.assignment_claim(campaign=campaign, expert=expert) is not None

    writes = _wal_writes() - before
    if durable:
        assert writes >= CLAIMS
    else:
        assert writes < CLAIMS // 2


def test_a_submits_commit_waits_for_the_disk(experts_and_campaign):
    experts, campaign = experts_and_campaign
    claims = [services.assignment_claim(campaign=campaign, expert=e) for e in experts]
    before = _wal_writes()

    for expert, assignment in zip(experts, claims, strict=True):
        services.review_submit(
            assignment_id=assignment.pk,
            expert=expert,
            body={"preference": {"chosen": assignment.response_order[0], "strength": 1}},
        )

    assert _wal_writes() - before >= CLAIMS


def test_a_claim_inside_a_larger_transaction_leaves_its_commit_to_it(experts_and_campaign):
    experts, campaign = experts_and_campaign
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        before = cursor.fetchone()[0]
        assert services.assignment_claim(campaign=campaign, expert=experts[0]) is not None
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == before
