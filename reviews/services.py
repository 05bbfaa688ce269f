"""The work: claiming slots, submitting and skipping, leases."""

from __future__ import annotations

import functools
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from feedback.errors import (
    Busy,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    unknown_fields,
)
from feedback.item_input import storable_text, unstorable
from feedback.models import Campaign, Item, QueueEntry, Response, User
from feedback.rows import Columns, run_statement
from feedback.selectors import unmet_requirements
from reviews import signals
from reviews.models import Assignment, CampaignProgress, Review

_shuffle = random.SystemRandom()

SKIP_REASONS = {
    "outside_expertise": "Outside my expertise",
    "unclear_prompt": "The prompt is unclear",
    "broken_item": "The item is broken or unreadable",
    "conflict_of_interest": "Conflict of interest",
    "too_long": "Too long for the time allowed",
    "other": "Other",
}
FLAGS = {"unsafe", "pii", "off_topic", "all_wrong", "both_bad", "needs_expert"}
MAX_RATIONALE = 20_000
MAX_SKIP_NOTE = 2000
HEARTBEAT_GAP_SECONDS = 120
# A count of pasted characters above this is not one (the texts hold far fewer); it would
# also not fit the integers readers of the reviews (exports, the lead page) take it as.
MAX_PASTED_CHARS = 2**31 - 1
MAX_CORRECTION = 1_000_000


def expert_may_review(*, campaign: Campaign, expert: User) -> None:
    """Raise unless the expert may claim work in the campaign.

    The database is asked only about what the campaign requires, so the common case
    (no required skills, no qualification) costs no query at all.
    """
    if expert.role not in {User.Role.EXPERT, User.Role.LEAD}:
        raise PermissionDenied("Only experts and leads review items.")
    if campaign.status != Campaign.Status.ACTIVE:
        raise Conflict(
            f"The campaign is {campaign.status}, not active.", code="campaign_not_active"
        )
    missing, unqualified = unmet_requirements(user=expert, campaign=campaign)
    if missing:
        raise PermissionDenied(f"The campaign needs the skills: {', '.join(sorted(missing))}.")
    if unqualified:
        raise PermissionDenied("You are not qualified for this campaign yet.")


# Expiry is one statement: take due claims (a sweep skips rows a submit or another expiry
# holds), mark them expired and give each item its slots back. Queue rows are locked in item
# order so two expiry runs that free slots on the same items cannot deadlock.
_EXPIRE_SQL = """
WITH due AS (
    SELECT a.id FROM reviews_assignment a
    WHERE a.status = 'claimed' AND a.lease_expires_at < %(now)s {campaign_filter}
    ORDER BY a.lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE {skip_locked}
), expired AS (
    UPDATE reviews_assignment a SET status = 'expired', finished_at = %(now)s
    FROM due WHERE a.id = due.id
    RETURNING a.id, a.item_id, a.is_gold
), items_now AS (
    -- Not to an item made gold since it was claimed: gold takes no slot. Its row is read
    -- locked, so an admin's change being saved is waited for and seen, not the one before.
    SELECT i.id, i.is_gold FROM feedback_item i
    WHERE i.id IN (SELECT item_id FROM expired WHERE NOT is_gold)
    ORDER BY i.id FOR SHARE
), counts AS (
    SELECT e.item_id, count(*) AS n FROM expired e JOIN items_now i ON i.id = e.item_id
    WHERE NOT e.is_gold AND NOT i.is_gold GROUP BY e.item_id
), locked AS (
    SELECT q.item_id FROM feedback_queueentry q WHERE q.item_id IN (SELECT item_id FROM counts)
    ORDER BY q.item_id FOR UPDATE
), freed AS (
    UPDATE feedback_queueentry q SET open_slots = q.open_slots + counts.n
    FROM counts JOIN locked ON locked.item_id = counts.item_id
    WHERE q.item_id = counts.item_id
    RETURNING q.item_id
)
SELECT (SELECT count(*) FROM expired), (SELECT count(*) FROM freed)
"""


def assignments_expire_due(
    *, campaign_id: int | None = None, limit: int = 500, assignment_id: int | None = None
) -> int:
    """Expire claims whose lease has run out and give their slots back to the queue."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        filters = ""
        params: dict[str, Any] = {"now": now, "limit": limit}
        if campaign_id is not None:
            filters += " AND a.campaign_id = %(campaign)s"
            params["campaign"] = campaign_id
        if assignment_id is not None:
            filters += " AND a.id = %(assignment)s"
            params["assignment"] = assignment_id
        # One claim named is waited for when another process holds it (a sweep ending it,
        # a submit), then looked at as that left it; a sweep goes on to the rest instead.
        skip_locked = "" if assignment_id is not None else "SKIP LOCKED"
        sql = _EXPIRE_SQL.format(campaign_filter=filters, skip_locked=skip_locked)
        rows = run_statement(sql, params)
        return int(rows[0][0])
    with transaction.atomic():
        qs = Assignment.objects.filter(status=Assignment.Status.CLAIMED, lease_expires_at__lt=now)
        if campaign_id is not None:
            qs = qs.filter(campaign_id=campaign_id)
        if assignment_id is not None:
            qs = qs.filter(pk=assignment_id)
        due = list(qs.order_by("lease_expires_at").values_list("pk", "item_id", "is_gold")[:limit])
        if not due:
            return 0
        Assignment.objects.filter(pk__in=[pk for pk, _, _ in due]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        _give_slots_back(item_id for _, item_id, is_gold in due if not is_gold)
    return len(due)


def assignments_release(*, assignment_ids: list[int]) -> int:
    """End these claims now, as if their leases had run out (an admin freeing a stuck claim):
    each is marked expired and its slot goes back to the queue. Ones that are not live claims
    are left alone. Returns how many were released."""
    released = 0
    for assignment_id in assignment_ids:
        with transaction.atomic():
            due = Assignment.objects.filter(
                pk=assignment_id, status=Assignment.Status.CLAIMED
            ).update(lease_expires_at=timezone.now() - timedelta(microseconds=1))
            if due:
                released += assignments_expire_due(assignment_id=assignment_id, limit=1)
    return released


def _give_slots_back(item_ids: Iterable[int]) -> None:
    """Ended claims' slots return to the queue, one statement per item (the ORM paths; the
    PostgreSQL expiry does this inside its own statement); not to an item made gold since it
    was claimed, since gold takes no slot."""
    for item_id, n in Counter(item_ids).items():
        # The item's row locked and read as it is now, an admin's change being saved waited
        # for (as the PostgreSQL expiry does).
        is_gold = (
            Item.objects.select_for_update(no_key=True)
            .filter(pk=item_id)
            .values_list("is_gold", flat=True)
            .first()
        )
        if is_gold is False:
            QueueEntry.objects.filter(pk=item_id).update(open_slots=F("open_slots") + n)


# How long an expert's request waits for a queue row another write holds before it gives up.
# Claims hold a row for a millisecond or so; an admin's change of the overlap moves every
# item's slots in one transaction (seconds at a million items), and five web workers waiting
# on it would be a site that answers nobody. So the claim's own expiry of due leases leaves
# them to a later run or the beat job, and a skip (which gives its slot back) is a 503
# queue_busy, asked again in a moment. The beat job and an admin's release wait.
QUEUE_LOCK_WAIT_MS = 200
_LOCK_WAIT = f"{QUEUE_LOCK_WAIT_MS}ms"


class _QueueHeld(Exception):
    """A queue row stayed held longer than QUEUE_LOCK_WAIT_MS."""


@contextmanager
def _queue_lock_wait_bounded(*, atomic: bool = True) -> Iterator[None]:
    """Run the block with its lock waits ending after QUEUE_LOCK_WAIT_MS with _QueueHeld,
    nothing of the block kept: in a transaction of its own (a savepoint within a caller's),
    or, with atomic=False outside any transaction, as the block's statements run (one
    statement: three round trips, not a transaction's six)."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            yield
        return
    try:
        if connection.in_atomic_block:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('lock_timeout')")
                before = cursor.fetchone()[0]
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_WAIT])
                yield
                # As it was for the rest of the caller's transaction (a savepoint released
                # keeps a SET LOCAL; one rolled back undoes it).
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [before])
        elif atomic:
            with transaction.atomic(), connection.cursor() as cursor:
                # Ends with the transaction.
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_WAIT])
                yield
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", [_LOCK_WAIT])
                try:
                    yield
                finally:
                    cursor.execute("RESET lock_timeout")  # to the connection's own
    except OperationalError as exc:
        if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
            raise _QueueHeld from exc
        raise


# Lazy expiry runs at most this often per process and campaign (and always when the queue
# looks dry), so a claim costs one statement in the common case; the beat job does the rest.
LAZY_EXPIRY_SECONDS = 1.0
_last_lazy_expiry: dict[int, float] = {}


def _expire_lazily(campaign_id: int, *, force: bool = False) -> int | None:
    """Expire due leases of the campaign now and then; how many, or None when queue rows a
    longer write holds stopped it."""
    clock = time.monotonic()
    if not force and clock - _last_lazy_expiry.get(campaign_id, -1e9) < LAZY_EXPIRY_SECONDS:
        return 0
    _last_lazy_expiry[campaign_id] = clock
    try:
        with _queue_lock_wait_bounded(atomic=False):
            return assignments_expire_due(campaign_id=campaign_id, limit=100)
    except _QueueHeld:
        return None  # a longer write holds the queue: left to a later run or the beat job


# The claim is one statement, so in autocommit it is one round trip and one short transaction:
#   own    the expert's claimed assignment in the campaign, if any (live or stale);
#   pick   the first open slot by priority, then breadth-first (fewest open slots: items that
#          already have reviews or claims first), then age, among items the expert has never
#          had; queue rows another claimer holds are skipped, never waited for;
#   taken  one slot taken on that queue row (the item row is not written);
#   claimed  the assignment (in the queue row's campaign) with its own shuffled response order.
# The partial unique index assignment_one_claim_per_expert makes a concurrent second claim
# by the same expert fail instead of holding two slots.
_CLAIM_SQL = """
WITH own AS (
    SELECT a.id, a.lease_expires_at > %(now)s AS live FROM reviews_assignment a
    WHERE a.campaign_id = %(campaign)s AND a.expert_id = %(expert)s AND a.status = 'claimed'
), pick AS (
    {pick}
), taken AS (
    {taken}
), claimed AS (
    INSERT INTO reviews_assignment (
        campaign_id, item_id, expert_id, status, claimed_at, lease_expires_at, last_seen_at,
        finished_at, observed_seconds, active_seconds, response_order, skip_reason, skip_note,
        is_gold, draft)
    SELECT taken.campaign_id, taken.id, %(expert)s, 'claimed', %(now)s, %(lease)s, %(now)s,
        NULL, 0, 0,
        COALESCE((SELECT jsonb_agg(r.id ORDER BY random()) FROM feedback_response r
                  WHERE r.item_id = taken.id), '[]'::jsonb),
        '', '', %(gold)s, '{{}}'::jsonb
    FROM taken
    RETURNING id, item_id, response_order{lazy}
)
SELECT 'new', id, item_id, response_order{pad} FROM claimed
UNION ALL
SELECT CASE WHEN live THEN 'live' ELSE 'stale' END, id, NULL, NULL{pad} FROM own{shown}
"""

# The queue is two partial indexes of the queue table: started items (breadth-first: fewest
# open slots first) and fresh ones. Among started items only the first PARTIAL_SCAN are
# looked at: an expert who already has all of them (one much faster than the others) is given
# a fresh item instead of walking an ever longer list, so a claim costs the same at any size
# and any expert's pace.
# The best candidate by priority, then started before fresh, then fewest open slots, then age,
# that no other claimer holds is locked.
_PICK_QUEUE = """
    WITH started_fit AS (
        SELECT s.item_id, s.priority, s.open_slots FROM (
            SELECT item_id, priority, open_slots FROM feedback_queueentry
            WHERE campaign_id = %(campaign)s AND open_slots > 0 AND started
            ORDER BY priority DESC, open_slots ASC, item_id ASC
            LIMIT %(scan)s) s
        -- a probe per candidate, so the cost is bounded by the scan, not the expert's history
        WHERE (SELECT 1 FROM reviews_assignment a
               WHERE a.item_id = s.item_id AND a.expert_id = %(expert)s LIMIT 1) IS NULL
        LIMIT %(candidates)s
    )
    SELECT q.item_id AS id FROM (SELECT * FROM (
        (SELECT item_id, priority, TRUE AS started, open_slots FROM started_fit)
        UNION ALL
        (SELECT item_id, priority, FALSE, open_slots FROM feedback_queueentry
         WHERE campaign_id = %(campaign)s AND open_slots > 0 AND NOT started
           -- With no started candidate among the first `scan`, a started item past them
           -- may come first by priority: a fresh item of lower priority than the first of
           -- those is left for the wider search (looked up only in that case). One value
           -- for the statement, so it bounds the index scan instead of filtering its rows.
           AND priority >= (SELECT CASE WHEN EXISTS (SELECT 1 FROM started_fit) THEN -2147483648
                ELSE COALESCE((
                    SELECT p.priority FROM feedback_queueentry p
                    WHERE p.campaign_id = %(campaign)s AND p.open_slots > 0 AND p.started
                    ORDER BY p.priority DESC, p.open_slots ASC, p.item_id ASC
                    OFFSET %(scan)s LIMIT 1), -2147483648) END)
         ORDER BY priority DESC, item_id ASC
         LIMIT %(candidates)s)
    ) u
    -- The few candidates put in order before their queue rows are looked up (OFFSET 0 keeps
    -- the planner from merging this in): the rows are then read and locked one at a time in
    -- that order until one is free, usually the first, instead of all read before sorting.
    ORDER BY priority DESC, started DESC, open_slots ASC, item_id ASC OFFSET 0) c
    JOIN feedback_queueentry q ON q.item_id = c.item_id
    WHERE NOT EXISTS (SELECT 1 FROM own) AND q.open_slots > 0
    ORDER BY c.priority DESC, c.started DESC, c.open_slots ASC, c.item_id ASC
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED"""

PARTIAL_SCAN = 200
# Candidates per part. Each claim holds its row for about a millisecond, so all of a few
# candidates are rarely held at once; when they are, the claim asks again with more, and
# without the scan bound (see _claim_postgres).
CANDIDATES = 4
RETRIES = ((10**9, 64), (10**9, 1024))

_TAKE_SLOT = """
    UPDATE feedback_queueentry q SET open_slots = q.open_slots - 1, started = TRUE
    FROM pick WHERE q.item_id = pick.id
    RETURNING q.item_id AS id, q.campaign_id"""

# Gold items take no slot: any number of experts may answer them, each once. Gold is mixed in
# with queue work, never served on its own: only while the queue holds an item the expert could
# be given (a fresh one, or one of the first started ones they have not had), so at the end of
# a campaign "nothing left" stays so instead of now and then a gold item.
_PICK_GOLD = """
    SELECT i.id, i.campaign_id FROM feedback_item i
    WHERE NOT EXISTS (SELECT 1 FROM own)
      AND i.campaign_id = %(campaign)s AND i.is_gold
      AND EXISTS (SELECT 1 FROM feedback_response r WHERE r.item_id = i.id)
      AND NOT EXISTS (SELECT 1 FROM reviews_assignment a
                      WHERE a.item_id = i.id AND a.expert_id = %(expert)s)
      AND (EXISTS (SELECT 1 FROM feedback_queueentry q
                   WHERE q.campaign_id = %(campaign)s AND q.open_slots > 0 AND NOT q.started)
           OR EXISTS (SELECT 1 FROM (
                          SELECT item_id FROM feedback_queueentry
                          WHERE campaign_id = %(campaign)s AND open_slots > 0 AND started
                          ORDER BY priority DESC, open_slots ASC, item_id ASC
                          LIMIT %(scan)s) s
                      WHERE NOT EXISTS (SELECT 1 FROM reviews_assignment a
                                        WHERE a.item_id = s.item_id AND a.expert_id = %(expert)s)))
    ORDER BY random()
    LIMIT 1"""

# Instances of rows the claim and submit write or read with others (Columns.known).
_ASSIGNMENT = Columns(Assignment)
_REVIEW = Columns(Review)
# What the submit reads of its assignment and campaign (_SUBMIT_READ_SQL); any other column is
# loaded if asked for, as with only().
_SUBMITTED_ASSIGNMENT = Columns(
    Assignment,
    [
        "id",
        "campaign_id",
        "item_id",
        "expert_id",
        "status",
        "claimed_at",
        "lease_expires_at",
        "last_seen_at",
        "observed_seconds",
        "last_beat_active",
        "is_gold",
    ],
)
_SUBMITTED_CAMPAIGN = Columns(Campaign, ["id", "kind", "rubric", "acceptance"])


def _related(instance: Any, **objects: Any) -> None:
    """Give `instance` the related objects at hand (as the constructor's keywords would)."""
    for name, obj in objects.items():
        instance._meta.get_field(name).set_cached_value(instance, obj)


# What an expert is shown of an item: its prompt and context, and its responses (the columns
# not read, an item's metadata and gold answer, a response's model and usage, are left
# deferred). The API's claim reads them in its own statement: the item's row and one row per
# response after the claim's, each with the other's columns NULL, so `next/` answers with one
# statement fewer; the review page reads them when it is shown (reviews.selectors).
SHOWN_ITEM = Columns(Item, ["id", "prompt", "context"])
SHOWN_RESPONSE = Columns(Response, ["id", "text", "format", "images"])
Shown = tuple[Item, list[Response]]


_SHOWN_ROWS = f"""
UNION ALL
SELECT 'item', NULL, NULL, NULL, {SHOWN_ITEM.select("i")}, {SHOWN_RESPONSE.nulls()}
FROM claimed JOIN feedback_item i ON i.id = claimed.item_id
UNION ALL
SELECT 'response', NULL, NULL, NULL, {SHOWN_ITEM.nulls()}, {SHOWN_RESPONSE.select("r")}
FROM claimed JOIN feedback_response r ON r.item_id = claimed.item_id"""  # noqa: S608 (column names from the models)


# A claim's commit need not wait for its WAL to reach the disk (nor a synchronous standby),
# as a submit's must: a claim is a lease, and what a crash of the database server within
# the moment before PostgreSQL's WAL writer (or any other commit) flushes it can lose is the
# claim alone, its slot with it, both at once; the submit of a claim so lost gets 404 and
# saves nothing. Set for the claim's own transaction, by the row it writes; a claim made
# inside a larger transaction leaves it to that transaction. docs/queue.md has the figures.
_LAZY_COMMIT = ", set_config('synchronous_commit', 'off', true)"


def _claim_sql(pick: str, taken: str, *, shown: bool, lazy: bool = False) -> str:
    pad = f", {SHOWN_ITEM.nulls()}, {SHOWN_RESPONSE.nulls()}" if shown else ""
    return _CLAIM_SQL.format(
        pick=pick,
        taken=taken,
        pad=pad,
        shown=_SHOWN_ROWS if shown else "",
        lazy=_LAZY_COMMIT if lazy else "",
    )


_TAKE_GOLD = "SELECT id, campaign_id FROM pick"
# By (gold, shown, lazy).
_CLAIM_SQLS = {
    (gold, shown, lazy): _claim_sql(
        _PICK_GOLD if gold else _PICK_QUEUE,
        _TAKE_GOLD if gold else _TAKE_SLOT,
        shown=shown,
        lazy=lazy,
    )
    for gold in (False, True)
    for shown in (False, True)
    for lazy in (False, True)
}
_CLAIM_QUEUE_SQL = _CLAIM_SQLS[False, False, False]


def _claim_statement(
    *,
    campaign: Campaign,
    expert: User,
    gold: bool,
    candidates: int = CANDIDATES,
    scan: int = PARTIAL_SCAN,
    shown: bool = False,
) -> tuple[str, Assignment | None, Shown | None]:
    """One attempt: ("new" | "live", assignment), ("stale", stale one) or ("none", None);
    with `shown`, what a new claim's expert is shown, read by the same statement."""
    now = timezone.now()
    lease = now + timedelta(minutes=campaign.lease_minutes)
    params = {
        "now": now,
        "lease": lease,
        "campaign": campaign.pk,
        "expert": expert.pk,
        "gold": gold,
        "scan": scan,
    }
    if not gold:
        params["candidates"] = candidates
    claim = None
    item = None
    responses = []
    lazy = not settings.CLAIM_SYNCHRONOUS_COMMIT and not connection.in_atomic_block
    for row in run_statement(_CLAIM_SQLS[gold, shown, lazy], params):
        if row[0] == "item":
            item = SHOWN_ITEM.make(row[4 : 4 + len(SHOWN_ITEM.fields)])
        elif row[0] == "response":
            responses.append(SHOWN_RESPONSE.make(row[4 + len(SHOWN_ITEM.fields) :]))
        else:
            claim = row[:4]
    if claim is None:
        return "none", None, None
    kind, pk, item_id, order = claim
    seen = None if item is None else (item, [r for r in responses if r is not None])
    if kind == "new":
        # Every column as the statement wrote it.
        assignment = _ASSIGNMENT.known(
            {
                "id": pk,
                "campaign_id": campaign.pk,
                "item_id": item_id,
                "expert_id": expert.pk,
                "status": Assignment.Status.CLAIMED,
                "claimed_at": now,
                "lease_expires_at": lease,
                "last_seen_at": now,
                "finished_at": None,
                "observed_seconds": 0,
                "last_beat_active": None,
                "active_seconds": 0,
                "response_order": order,  # jsonb, read in binary: a list already
                "skip_reason": "",
                "skip_note": "",
                "is_gold": gold,
                "draft": {},
            }
        )
        _related(assignment, campaign=campaign, expert=expert)
        return kind, assignment, seen
    return kind, Assignment.objects.select_related("campaign").get(pk=pk), None


def _draws_gold(campaign: Campaign) -> bool:
    return campaign.gold_rate > 0 and _shuffle.random() < campaign.gold_rate


# A slot this expert could take that concurrent claims held (see _claim_postgres).
# Fresh items and started ones apart, so each reads its part of the queue's partial indexes
# (the first fresh one in the index's order: as an EXISTS the planner may scan the table).
_HELD_SLOT_SQL = """
SELECT (
    SELECT q.item_id FROM feedback_queueentry q
    WHERE q.campaign_id = %(campaign)s AND q.open_slots > 0 AND NOT q.started
    ORDER BY q.priority DESC, q.item_id ASC LIMIT 1
) IS NOT NULL OR EXISTS (
    SELECT 1 FROM feedback_queueentry q
    WHERE q.campaign_id = %(campaign)s AND q.open_slots > 0 AND q.started
      AND NOT EXISTS (SELECT 1 FROM reviews_assignment a
                      WHERE a.item_id = q.item_id AND a.expert_id = %(expert)s))
"""
# How often, and after how many milliseconds each, a claim that found only held slots looks
# again: a claim holds its row for a millisecond or so, a new connection's first for ~10, and
# on a loaded host (dozens of claimers on 2 cores) a statement can take tens of milliseconds.
HELD_WAITS_MS = (2, 4, 8, 16, 32, 64, 128)


def _claim_postgres(
    *, campaign: Campaign, expert: User, shown: bool = False
) -> tuple[Assignment | None, Shown | None]:
    # A write holding the queue stops the forced expiry below too: waited for once a claim.
    expired_once = _expire_lazily(campaign.pk) is None
    want_gold = _draws_gold(campaign)
    widen = 0  # how far the search was widened after finding nothing (see RETRIES)
    cleaned = repaired = False
    waits = iter(HELD_WAITS_MS)
    for _ in range(8 + len(HELD_WAITS_MS)):
        scan, candidates = RETRIES[widen - 1] if widen else (PARTIAL_SCAN, CANDIDATES)
        try:
            kind, assignment, seen = _claim_statement(
                campaign=campaign,
                expert=expert,
                gold=want_gold,
                candidates=candidates,
                scan=scan,
                shown=shown,
            )
        except IntegrityError as exc:
            cause = exc.__cause__
            if isinstance(cause, psycopg.errors.UniqueViolation):
                if cause.diag.constraint_name == "assignment_once_per_expert" and not repaired:
                    # An item this expert had was in the queue as fresh (which is not checked
                    # against the expert's history), or their own concurrent claim took the
                    # same gold item: mark their items started (harmless in the second case),
                    # then go on.
                    repaired = True
                    _mark_started_items_of(campaign_id=campaign.pk, expert_id=expert.pk)
                # Otherwise the same expert's concurrent claim won (double click, second
                # tab); the next attempt finds it as their live claim.
                continue
            if not cleaned and isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                # The queue row picked has no item: one deleted in raw SQL, behind Django's
                # back (queue rows have no constraint to their item). Left there, it would
                # be picked first and fail every claim; drop such rows once and go on.
                cleaned = True
                _drop_queue_rows_without_item(campaign.pk)
                continue
            raise
        if kind in {"new", "live"}:
            return assignment, seen
        if kind == "stale" and assignment is not None:
            # Their own claim ran out: free it first, then claim afresh. Another process
            # ending it at the same moment (the beat job, another worker's lazy expiry) is
            # waited for, as long as for a held queue row: skipped, this claim would find the
            # same stale claim at every attempt and end saying nothing is left.
            try:
                with _queue_lock_wait_bounded(atomic=False):
                    assignments_expire_due(campaign_id=campaign.pk, assignment_id=assignment.pk)
            except _QueueHeld:
                raise Busy(QUEUE_BUSY_MESSAGE, code="queue_busy") from None
            continue
        if want_gold:
            want_gold = False  # no gold left for this expert: serve the queue
            continue
        if widen < len(RETRIES):
            # Nothing among the first candidates: all held by concurrent claimers, or this
            # expert already has every started item looked at. Look further.
            widen += 1
            continue
        if not expired_once:
            expired_once = True
            if _expire_lazily(campaign.pk, force=True):
                continue  # expired leases gave slots back
        # Nothing found, yet the queue may hold slots this expert could take: concurrent
        # claims held them when looked at, so they were skipped. One may be this expert's own
        # (a double click, a second tab) on the last slot, not committed when this claim's
        # statements ran: it is this one's answer, found by the next attempt. Others' may be
        # let go. "Nothing left" is said only once no such slot is left.
        if not _held_slot_left(campaign_id=campaign.pk, expert_id=expert.pk):
            break
        wait_ms = next(waits, None)
        if wait_ms is None:
            # Still held after the waits: a longer write holds them (an admin's change of
            # the campaign's overlap, say, until it commits). Not "nothing left": try again.
            live = _live_claim(campaign=campaign, expert=expert)
            if live is not None:
                return live, None
            raise Busy(QUEUE_BUSY_MESSAGE, code="queue_busy")
        time.sleep(wait_ms / 1000)
    return _live_claim(campaign=campaign, expert=expert), None


QUEUE_BUSY_MESSAGE = (
    "The items left for you are held for a moment by a change still being saved (an admin's"
    " change to the campaign, say); ask again in a few seconds."
)


def _held_slot_left(*, campaign_id: int, expert_id: int) -> bool:
    rows = run_statement(_HELD_SLOT_SQL, {"campaign": campaign_id, "expert": expert_id})
    return bool(rows[0][0])


def _live_claim(*, campaign: Campaign, expert: User) -> Assignment | None:
    return (
        Assignment.objects.select_related("campaign")
        .filter(
            campaign=campaign,
            expert=expert,
            status=Assignment.Status.CLAIMED,
            lease_expires_at__gt=timezone.now(),
        )
        .first()
    )


def _mark_started_items_of(*, campaign_id: int, expert_id: int) -> None:
    """Every queue row of an item this expert has had any assignment for is started (and so
    checked against the history of whoever claims it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE feedback_queueentry q SET started = TRUE FROM reviews_assignment a"
            " WHERE a.expert_id = %s AND q.campaign_id = %s AND q.item_id = a.item_id"
            " AND NOT q.started",
            [expert_id, campaign_id],
        )


def _drop_queue_rows_without_item(campaign_id: int) -> None:
    """Delete the campaign's queue rows whose item is gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM feedback_queueentry q WHERE q.campaign_id = %s"
            " AND NOT EXISTS (SELECT 1 FROM feedback_item i WHERE i.id = q.item_id)",
            [campaign_id],
        )


def _claim_portable(*, campaign: Campaign, expert: User) -> Assignment | None:
    """The same rules through the ORM, for the SQLite demo, where claims serialise."""
    now = timezone.now()
    assignments_expire_due(campaign_id=campaign.pk, limit=50)
    with transaction.atomic():
        own = (
            Assignment.objects.filter(
                campaign=campaign, expert=expert, status=Assignment.Status.CLAIMED
            )
            .order_by("claimed_at")
            .first()
        )
        if own is not None and own.lease_expires_at > now:
            return own
        if own is not None:
            # Their own claim ran out, and the batch above did not reach it (more were due):
            # free it first, as the PostgreSQL claim does, then claim afresh.
            assignments_expire_due(campaign_id=campaign.pk, assignment_id=own.pk, limit=1)
        seen = Assignment.objects.filter(expert=expert, item_id=OuterRef("pk"))
        item_id = None
        is_gold = False
        # Gold beside queue work only, as _PICK_GOLD says.
        if _draws_gold(campaign) and (
            QueueEntry.objects.filter(campaign=campaign, open_slots__gt=0)
            .exclude(Exists(seen))
            .exists()
        ):
            item_id = (
                Item.objects.filter(campaign=campaign, is_gold=True, responses__isnull=False)
                .exclude(Exists(seen))
                .order_by("?")
                .values_list("pk", flat=True)
                .first()
            )
            is_gold = item_id is not None
        if item_id is None:
            item_id = (  # a queue row's primary key is its item's id, so `seen` applies
                QueueEntry.objects.filter(campaign=campaign, open_slots__gt=0)
                .exclude(Exists(seen))
                .order_by("-priority", "-started", "open_slots", "item_id")
                .values_list("item_id", flat=True)
                .first()
            )
            if item_id is None:
                return None
            if not QueueEntry.objects.filter(pk=item_id, open_slots__gt=0).update(
                open_slots=F("open_slots") - 1, started=True
            ):
                return None
        order = list(Response.objects.filter(item_id=item_id).values_list("pk", flat=True))
        _shuffle.shuffle(order)
        assignment = Assignment.objects.create(
            campaign=campaign,
            item_id=item_id,
            expert=expert,
            claimed_at=now,
            last_seen_at=now,
            lease_expires_at=now + timedelta(minutes=campaign.lease_minutes),
            response_order=order,
            is_gold=is_gold,
        )
    return assignment


def assignment_claim(*, campaign: Campaign, expert: User) -> Assignment | None:
    """Claim the next slot for an expert, or return None when the queue is dry for them.

    1. The expert must be allowed to (role, campaign active, skills, qualification).
    2. An expert who holds a live claim in the campaign gets it back, not a second one;
       a claim of theirs whose lease ran out is expired first.
    3. Now and then (the campaign's gold rate) a gold item they have not had.
    4. Otherwise the first open slot by priority, then breadth-first, then age, among items
       they have never had (not even an expired or skipped claim); see _CLAIM_SQL.
    """
    return _claim(campaign=campaign, expert=expert, shown=False)[0]


def assignment_claim_shown(
    *, campaign: Campaign, expert: User
) -> tuple[Assignment, Shown | None] | None:
    """assignment_claim, with what the expert is shown of a new claim's item when the claim
    itself read it (on PostgreSQL; None otherwise, and for a claim given back: read it then)."""
    assignment, seen = _claim(campaign=campaign, expert=expert, shown=True)
    return None if assignment is None else (assignment, seen)


def _claim(
    *, campaign: Campaign, expert: User, shown: bool
) -> tuple[Assignment | None, Shown | None]:
    try:
        expert_may_review(campaign=campaign, expert=expert)
    except Conflict:
        # A campaign that is not active hands out no new work; an expert holding a live
        # claim in it gets that claim back all the same, since its submit is still taken.
        live = _live_claim(campaign=campaign, expert=expert)
        if live is None:
            raise
        return live, None
    if connection.vendor == "postgresql":
        return _claim_postgres(campaign=campaign, expert=expert, shown=shown)
    return _claim_portable(campaign=campaign, expert=expert), None


def _locked_own_assignment(*, assignment_id: int, expert: User) -> Assignment:
    assignment = (
        # of=self: locking the joined campaign row too would serialise every submit in the
        # campaign.
        Assignment.objects.select_for_update(of=("self",))
        .select_related("campaign")
        .filter(pk=assignment_id, expert=expert)
        .first()
    )
    if assignment is None:
        raise NotFound(f"No assignment {assignment_id} of yours.")
    return assignment


def _ensure_live(assignment: Assignment) -> None:
    if (
        assignment.status == Assignment.Status.CLAIMED
        and assignment.lease_expires_at <= timezone.now()
    ):
        raise Conflict(
            "Your lease on this item ran out, so it is no longer yours (its slot goes back to the"
            " queue); nothing was saved.",
            code="lease_expired",
        )
    if assignment.status != Assignment.Status.CLAIMED:
        raise Conflict(
            f"This assignment is {assignment.status}; nothing was saved.",
            code=f"assignment_{assignment.status}",
        )


def assignment_heartbeat(*, assignment_id: int, expert: User, active: bool = True) -> Assignment:
    """Extend the lease while the expert works; count time only while they are active.

    An idle beat neither counts time nor extends the lease: a tab left open is not work and
    must not hold the item's slot past its lease.
    """
    now = timezone.now()
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        _ensure_live(assignment)
        seen = now
        if active:
            gap = (now - assignment.last_seen_at).total_seconds()
            if gap >= HEARTBEAT_GAP_SECONDS:
                # Gaps longer than two minutes are idle time (a closed laptop), not work.
                assignment.observed_seconds += HEARTBEAT_GAP_SECONDS
            elif gap > 0:
                # Whole seconds are counted; the part of a second left over is carried to the
                # next gap (the beat is taken as seen that much earlier), so a page beating
                # every 30 s, or a client beating every second, loses nothing to rounding.
                credited = int(gap)
                assignment.observed_seconds += credited
                seen = assignment.last_seen_at + timedelta(seconds=credited)
            assignment.lease_expires_at = now + timedelta(minutes=assignment.campaign.lease_minutes)
        assignment.last_seen_at = seen
        assignment.last_beat_active = active
        assignment.save(
            update_fields=[
                "observed_seconds",
                "lease_expires_at",
                "last_seen_at",
                "last_beat_active",
            ]
        )
    return assignment


# Default_Ignorable_Code_Point (Unicode 15.1, DerivedCoreProperties.txt) outside category Cf,
# which is tested by category, and U+2800 BRAILLE PATTERN BLANK, which renders as a space.
_SHOWS_NOTHING_RE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u2800\u3164\ufe00-\ufe0f"
    "\uffa0\U000e0000-\U000e0fff]"
)


def _says_nothing(text: str) -> bool:
    """Whitespace and characters that show nothing alone: formatting ones (a zero-width
    space, a joiner), Unicode's other default-ignorable ones (Hangul fillers, variation
    selectors) and the blank braille pattern."""
    return all(
        ch.isspace() or unicodedata.category(ch) == "Cf" or _SHOWS_NOTHING_RE.match(ch)
        for ch in text
    )


def assignment_skip(*, assignment_id: int, expert: User, reason: str, note: str = "") -> Assignment:
    if reason not in SKIP_REASONS:
        raise ValidationFailed(
            f"reason must be one of {', '.join(SKIP_REASONS)}",
            fields={"reason": ["unknown reason"]},
        )
    if reason == "other" and _says_nothing(note):
        raise ValidationFailed(
            "Say why in a note.", fields={"note": ["required when reason is other"]}
        )
    if problem := unstorable(note):
        raise ValidationFailed(f"The note {problem}.", fields={"note": [problem]})
    if len(note) > MAX_SKIP_NOTE:
        # Refused, not cut: the page's form holds the note to this length, so a longer one
        # was not typed there, and the API refuses it the same way.
        raise ValidationFailed(
            f"The note is longer than {MAX_SKIP_NOTE:,} characters.",
            fields={"note": [f"Ensure this field has no more than {MAX_SKIP_NOTE} characters."]},
        )
    try:
        return _skip(assignment_id=assignment_id, expert=expert, reason=reason, note=note)
    except _QueueHeld:
        raise Busy(SKIP_BUSY_MESSAGE, code="queue_busy") from None


SKIP_BUSY_MESSAGE = (
    "Your skip waits for a change still being saved (an admin's change to the campaign, say);"
    " nothing was saved. Skip again in a few seconds."
)


def _skip(*, assignment_id: int, expert: User, reason: str, note: str) -> Assignment:
    with _queue_lock_wait_bounded():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        if assignment.status == Assignment.Status.SKIPPED:
            # A repeat (a double click, a retried request) answers the same; one that says
            # otherwise is told so, not 200 while what it sent is dropped.
            differences = [
                name
                for name, stored, sent in (
                    ("reason", assignment.skip_reason, reason),
                    ("note", assignment.skip_note, note),
                )
                if stored != sent
            ]
            if differences:
                raise Conflict(
                    f"Assignment {assignment_id} was already skipped with a different"
                    f" {' and '.join(differences)}; nothing was changed.",
                    fields={name: ["differs from the skip already made"] for name in differences},
                    code="already_skipped",
                )
            return assignment
        _ensure_live(assignment)
        assignment.status = Assignment.Status.SKIPPED
        assignment.skip_reason = reason
        assignment.skip_note = note
        assignment.finished_at = timezone.now()
        assignment.save(update_fields=["status", "skip_reason", "skip_note", "finished_at"])
        if not assignment.is_gold:
            _give_slots_back([assignment.item_id])
    return assignment


# --- submit ---------------------------------------------------------------


@dataclass
class ReviewInput:
    ratings: dict[str, dict[str, int]]
    chosen: int | None
    strength: int | None
    ranking: list[int]
    correction_response: int | None
    correction_text: str
    rationale: str
    flags: list[str]
    active_seconds: int | None
    pasted_chars: dict[str, int]


def _as_response_id(
    value: Any, valid: set[int], where: str, fields: dict[str, list[str]]
) -> int | None:
    # An integer, or its digits as a string (JSON object keys are strings); never a float
    # (26.9 is not response 26), a boolean, digits of other scripts that int() reads, or
    # more digits than an id has (int() refuses over 4,300 of them).
    if isinstance(value, int) and not isinstance(value, bool):
        rid = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        rid = int(value)
    elif value is None:
        fields.setdefault(where, []).append("is required: the id of one of the item's responses")
        return None
    else:
        fields.setdefault(where, []).append(f"{value!r} is not a response id")
        return None
    if rid not in valid:
        fields.setdefault(where, []).append(f"{rid} is not a response of this item")
        return None
    return rid


def _given(body: dict[str, Any], name: str, absent: Any) -> Any:
    """The body's value for `name`, or `absent` when it is left out or null."""
    value = body.get(name)
    return absent if value is None else value


def _holds_something(value: Any, kind: type) -> bool:
    """Whether a field the campaign's kind does not take says anything: left out, null or an
    empty value of its type (a client sending every field of a review) says nothing."""
    return value is not None and not (isinstance(value, kind) and not value)


def review_parse(*, campaign: Campaign, response_ids: list[int], body: Any) -> ReviewInput:
    """Check a submit body against the campaign kind, its rubric and the item's responses."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", fields={"body": ["must be an object"]}
        )
    fields: dict[str, list[str]] = {}
    valid = set(response_ids)
    kind = campaign.kind
    rubric = {c["key"]: c for c in campaign.rubric}

    ratings: dict[str, dict[str, int]] = {}
    # Only a field left out or null is absent: `0`, `false` or `[]` where an object is asked
    # for is the wrong thing sent, named as `5` would be.
    raw_ratings = _given(body, "ratings", {})
    if not isinstance(raw_ratings, dict):
        fields["ratings"] = ["must map response ids to scores"]
        raw_ratings = {}
    rated_as: dict[int, str] = {}  # each response's key, to refuse a second one for it
    for key, scores in raw_ratings.items():
        rid = _as_response_id(key, valid, f"ratings.{key}", fields)
        if rid is None:
            continue
        if rid in rated_as:
            # "7" and "07" name one response: which scores to keep is not ours to guess.
            fields.setdefault(f"ratings.{key}", []).append(
                f"rates response {rid} again (it is rated as {rated_as[rid]!r} already)"
            )
            continue
        rated_as[rid] = key
        if not isinstance(scores, dict):
            fields[f"ratings.{key}"] = ["must map criteria to scores"]
            continue
        clean: dict[str, int] = {}
        for criterion, score in scores.items():
            where = f"ratings.{key}.{criterion}"
            spec = rubric.get(criterion)
            if spec is None:
                fields.setdefault(where, []).append("is not a criterion of the rubric")
            elif (
                not isinstance(score, int)
                or isinstance(score, bool)
                or not spec["min"] <= score <= spec["max"]
            ):
                fields.setdefault(where, []).append(
                    f"must be an integer from {spec['min']} to {spec['max']}, got {score!r}"
                )
            else:
                clean[criterion] = score
        ratings[str(rid)] = clean
    if (
        kind in {Campaign.Kind.RATING, Campaign.Kind.CORRECTION}
        and rubric
        and not fields.get("ratings")
    ):
        for rid in response_ids:
            missing = set(rubric) - set(ratings.get(str(rid), {}))
            # Unless the response's own scores were named already (`ratings.12`, or one of
            # them, `ratings.12.accuracy`); `ratings.120` is another key.
            if missing and not any(
                k == f"ratings.{rid}" or k.startswith(f"ratings.{rid}.") for k in fields
            ):
                fields[f"ratings.{rid}"] = [f"missing scores for {', '.join(sorted(missing))}"]

    chosen = strength = None
    preference = body.get("preference")
    if kind == Campaign.Kind.PAIRWISE:
        if not isinstance(preference, dict):
            fields["preference"] = ['is required: {"chosen": <response id>, "strength": 1-3}']
        else:
            # A misspelt `strenght` would otherwise be dropped without a word.
            fields |= unknown_fields(
                preference, {"chosen", "strength"}, "preference", at="preference"
            )
            chosen = _as_response_id(preference.get("chosen"), valid, "preference.chosen", fields)
            strength = preference.get("strength", 1)
            if (
                not isinstance(strength, int)
                or isinstance(strength, bool)
                or not 1 <= strength <= 3
            ):
                fields["preference.strength"] = [f"must be 1, 2 or 3, got {strength!r}"]
    elif _holds_something(preference, dict):
        fields["preference"] = [f"a {kind} campaign takes no preference"]

    ranking: list[int] = []
    raw_ranking = body.get("ranking")
    if kind == Campaign.Kind.RANKING:
        if not isinstance(raw_ranking, list):
            fields["ranking"] = ["is required: every response id, best first"]
        else:
            for index, value in enumerate(raw_ranking):
                rid = _as_response_id(value, valid, f"ranking[{index}]", fields)
                if rid is not None:
                    ranking.append(rid)
            if (
                "ranking" not in fields
                and sorted(ranking) != sorted(valid)
                and not any(k.startswith("ranking[") for k in fields)
            ):
                fields["ranking"] = ["must list every response of the item exactly once"]
    elif _holds_something(raw_ranking, list):
        fields["ranking"] = [f"a {kind} campaign takes no ranking"]

    correction_response = None
    correction_text = ""
    correction = body.get("correction")
    if kind == Campaign.Kind.CORRECTION:
        if not isinstance(correction, dict):
            fields["correction"] = ['is required: {"response": <response id>, "text": "..."}']
        else:
            fields |= unknown_fields(
                correction, {"response", "text"}, "correction", at="correction"
            )
            correction_response = _as_response_id(
                correction.get("response", response_ids[0] if len(response_ids) == 1 else None),
                valid,
                "correction.response",
                fields,
            )
            text = correction.get("text")
            if not isinstance(text, str) or not text.strip():
                fields["correction.text"] = ["must be the corrected text"]
            elif len(text) > MAX_CORRECTION:
                fields["correction.text"] = [f"is longer than {MAX_CORRECTION} characters"]
            else:
                correction_text = text
    elif _holds_something(correction, dict):
        fields["correction"] = [f"a {kind} campaign takes no correction"]

    rationale = _given(body, "rationale", "")
    if not isinstance(rationale, str):
        fields["rationale"] = ["must be a string"]
        rationale = ""
    elif len(rationale) > MAX_RATIONALE:
        fields["rationale"] = [f"is longer than {MAX_RATIONALE} characters"]

    flags = _given(body, "flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        fields["flags"] = ["must be a list of strings"]
        flags = []
    else:
        unknown = [f for f in flags if f not in FLAGS]
        if unknown:
            fields["flags"] = [f"unknown flags {unknown}; known: {', '.join(sorted(FLAGS))}"]

    active_seconds = body.get("active_seconds")
    if active_seconds is not None and (
        not isinstance(active_seconds, int)
        or isinstance(active_seconds, bool)
        or active_seconds < 0
    ):
        fields["active_seconds"] = ["must be a non-negative integer"]
        active_seconds = None

    pasted = _given(body, "pasted_chars", {})
    if not isinstance(pasted, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_PASTED_CHARS
        for v in pasted.values()
    ):
        fields["pasted_chars"] = [
            f"must map field names to character counts (0 to {MAX_PASTED_CHARS:,})"
        ]
        pasted = {}

    known = {
        "ratings",
        "preference",
        "ranking",
        "correction",
        "rationale",
        "flags",
        "active_seconds",
        "pasted_chars",
    }
    fields |= unknown_fields(body, known, "review")
    for name, value in (
        ("rationale", rationale),
        ("correction.text", correction_text),
        ("pasted_chars", pasted),
    ):
        if problem := unstorable(value):
            fields.setdefault(name, []).append(problem)

    if fields:
        # Field names quote what was sent (keys of ratings, unknown fields): what PostgreSQL
        # and a UTF-8 answer cannot hold is replaced.
        fields = {storable_text(name): problems for name, problems in fields.items()}
        raise ValidationFailed(
            f"The review is invalid ({', '.join(sorted(fields))}); nothing was saved.",
            fields=fields,
        )
    return ReviewInput(
        ratings=ratings,
        chosen=chosen,
        strength=strength if chosen is not None else None,
        ranking=ranking,
        correction_response=correction_response,
        correction_text=correction_text,
        rationale=rationale,
        flags=sorted(set(flags)),
        active_seconds=active_seconds,
        pasted_chars={str(k): v for k, v in pasted.items()},
    )


def _gold_matches(item: Item, data: ReviewInput) -> bool | None:
    """Whether a gold item's review agrees with the gold answer; None when nothing to compare."""
    gold = item.gold_answer
    if not isinstance(gold, dict):
        return None
    if "chosen_position" in gold and data.chosen is not None:
        ids = list(item.responses.order_by("position", "id").values_list("pk", flat=True))
        return ids.index(data.chosen) == gold["chosen_position"]
    return None


def _observed_seconds(assignment: Assignment, now: datetime) -> int:
    """What the server saw of the expert's work: the active heartbeats' count, plus the gap
    since the last heartbeat (capped like a heartbeat gap) when that one was active; a client
    that never sent one (the API) is credited the wall-clock time since its claim.

    A claim with heartbeat time but no record of its last beat had its beats counted by a
    server from before last_beat_active (a claim open across the upgrade): its last beat is
    taken as active, as that server did.
    """
    elapsed = max(int((now - assignment.claimed_at).total_seconds()), 0)
    if assignment.last_beat_active is None and assignment.observed_seconds <= 0:
        return elapsed
    gap = 0.0
    if assignment.last_beat_active is not False:
        gap = min(max((now - assignment.last_seen_at).total_seconds(), 0), HEARTBEAT_GAP_SECONDS)
    return min(assignment.observed_seconds + int(gap), elapsed)


def review_submit(*, assignment_id: int, expert: User, body: Any) -> tuple[Review, bool]:
    """Store the expert's review; (review, created). A repeat submit returns the stored one.

    1. Read the assignment (its owner only). Already submitted: answer with that review when
       the repeat's judgement is the same, else 409 `already_submitted` (nothing changes).
    2. The lease must be live; else 409 and nothing is saved.
    3. Validate against the campaign kind, rubric and the item's responses.
    4. Store the review and close the assignment in one step that only succeeds while the
       claim is still live; accept the review now when the campaign says so.
    """
    if connection.vendor == "postgresql":
        return _submit_postgres(assignment_id=assignment_id, expert=expert, body=body)
    return _submit_portable(assignment_id=assignment_id, expert=expert, body=body)


def _verdict_for(
    *, campaign: Campaign, is_gold: bool, item_id: int, data: ReviewInput
) -> Review.Verdict:
    if is_gold and _gold_matches(Item.objects.get(pk=item_id), data) is False:
        return Review.Verdict.REJECTED
    if campaign.acceptance == Campaign.Acceptance.AUTO:
        return Review.Verdict.ACCEPTED
    return Review.Verdict.PENDING


def _announce_verdict(review: Review) -> None:
    if review.verdict != Review.Verdict.PENDING:
        review_id, verdict = review.pk, review.verdict
        transaction.on_commit(
            lambda: signals.review_verdict_changed.send(
                sender=Review, review_id=review_id, verdict=verdict
            )
        )


def _new_review(
    *,
    assignment: Assignment,
    expert: User,
    data: ReviewInput,
    active: int,
    verdict: str,
    now: datetime,
) -> Review:
    review = _REVIEW.known(
        {
            "id": None,
            "assignment_id": assignment.pk,
            "campaign_id": assignment.campaign_id,
            "item_id": assignment.item_id,
            "expert_id": expert.pk,
            "supersedes_id": None,
            "ratings": data.ratings,
            "chosen_id": data.chosen,
            "strength": data.strength,
            "ranking": data.ranking,
            "correction_response_id": data.correction_response,
            "correction_text": data.correction_text,
            "rationale": data.rationale,
            "flags": data.flags,
            "active_seconds": active,
            "pasted_chars": data.pasted_chars,
            "verdict": verdict,
            "verdict_by_id": None,
            "verdict_at": now if verdict != Review.Verdict.PENDING else None,
            "verdict_note": "",
            "created_at": now,
        }
    )
    review._state.adding = True  # not saved yet
    _related(review, expert=expert)
    return review


def _stored_review(assignment_id: int) -> Review:
    return Review.objects.get(assignment_id=assignment_id, supersedes__isnull=True)


def _judgement_differences(review: Review, data: ReviewInput) -> list[str]:
    """The parts of a repeated submit's judgement that differ from the stored review.

    The active time and paste counts are the page's running counters, not the judgement: a
    second click sends them a little higher, and is still the same review."""
    pairs = {
        "ratings": (review.ratings, data.ratings),
        "preference.chosen": (review.chosen_id, data.chosen),
        "preference.strength": (review.strength, data.strength),
        "ranking": (review.ranking, data.ranking),
        "correction.response": (review.correction_response_id, data.correction_response),
        "correction.text": (review.correction_text, data.correction_text),
        "rationale": (review.rationale, data.rationale),
        "flags": (sorted(review.flags), data.flags),
    }
    return [name for name, (stored, sent) in pairs.items() if stored != sent]


def _repeated_submit(assignment_id: int, data: ReviewInput) -> Review:
    """The stored review, for a repeat that says the same; 409 for one that does not, so a
    client is never told 200 while the judgement it sent is dropped."""
    review = _stored_review(assignment_id)
    differences = _judgement_differences(review, data)
    if differences:
        raise Conflict(
            f"Assignment {assignment_id} was already submitted (review {review.pk}) with a"
            f" different {', '.join(differences)}; a submitted review is never changed, nothing"
            " was saved.",
            fields={name: ["differs from the submitted review"] for name in differences},
            code="already_submitted",
        )
    return review


_SUBMIT_READ_SQL = """
SELECT a.status, a.claimed_at, a.last_seen_at, a.lease_expires_at, a.observed_seconds,
       a.last_beat_active, a.is_gold, a.item_id, a.campaign_id, c.kind, c.rubric, c.acceptance,
       ARRAY(SELECT r.id FROM feedback_response r WHERE r.item_id = a.item_id
             ORDER BY r.position, r.id)
FROM reviews_assignment a JOIN feedback_campaign c ON c.id = a.campaign_id
WHERE a.id = %(assignment)s AND a.expert_id = %(expert)s
"""


@functools.cache
def _submit_write_sql() -> tuple[str, list[Any]]:
    """The closing statement, its review columns taken from the model so the two cannot drift."""
    fields = [f for f in Review._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    # The links the review shares with its assignment come from the row being closed, so
    # they cannot differ from it (they have no database constraints of their own; see Review).
    shared = {
        "assignment_id": "closed.id",
        "campaign_id": "closed.campaign_id",
        "item_id": "closed.item_id",
        "expert_id": "closed.expert_id",
    }
    values = ", ".join(
        shared.get(f.attname) or f"CAST(%(f_{f.attname})s AS {f.db_type(connection)})"
        for f in fields
    )
    fields = [f for f in fields if f.attname not in shared]
    # Column names come from the model; every other value is a parameter.
    sql = f"""
WITH closed AS (
    UPDATE reviews_assignment SET status = 'submitted', finished_at = %(now)s,
        active_seconds = %(active)s, draft = '{{}}'::jsonb
    WHERE id = %(assignment)s AND expert_id = %(expert)s AND status = 'claimed'
      AND lease_expires_at > %(now)s
    RETURNING id, campaign_id, item_id, expert_id
), review AS (
    INSERT INTO reviews_review ({columns}) SELECT {values} FROM closed RETURNING id
)
SELECT id FROM review
"""  # noqa: S608
    return sql, fields


def _submit_postgres(*, assignment_id: int, expert: User, body: Any) -> tuple[Review, bool]:
    now = timezone.now()
    rows = run_statement(_SUBMIT_READ_SQL, {"assignment": assignment_id, "expert": expert.pk})
    if not rows:
        raise NotFound(f"No assignment {assignment_id} of yours.")
    (
        status,
        claimed_at,
        last_seen_at,
        lease_expires_at,
        observed_seconds,
        last_beat_active,
        is_gold,
        item_id,
        campaign_id,
        kind,
        rubric,
        acceptance,
        response_ids,
    ) = rows[0]
    campaign = _SUBMITTED_CAMPAIGN.known(
        {"id": campaign_id, "kind": kind, "rubric": rubric, "acceptance": acceptance}
    )
    if status == Assignment.Status.SUBMITTED:
        data = review_parse(campaign=campaign, response_ids=list(response_ids), body=body)
        return _repeated_submit(assignment_id, data), False
    assignment = _SUBMITTED_ASSIGNMENT.known(
        {
            "id": assignment_id,
            "campaign_id": campaign_id,
            "item_id": item_id,
            "expert_id": expert.pk,
            "status": status,
            "claimed_at": claimed_at,
            "last_seen_at": last_seen_at,
            "lease_expires_at": lease_expires_at,
            "observed_seconds": observed_seconds,
            "last_beat_active": last_beat_active,
            "is_gold": is_gold,
        }
    )
    _related(assignment, expert=expert)
    _ensure_live(assignment)
    data = review_parse(campaign=campaign, response_ids=list(response_ids), body=body)
    active = min(
        data.active_seconds if data.active_seconds is not None else 10**9,
        _observed_seconds(assignment, now),
    )
    verdict = _verdict_for(campaign=campaign, is_gold=is_gold, item_id=item_id, data=data)
    review = _new_review(
        assignment=assignment, expert=expert, data=data, active=active, verdict=verdict, now=now
    )
    sql, fields = _submit_write_sql()
    # The connection itself, not the thread-local proxy each field would look it up through.
    db = connections[connection.alias]
    params: dict[str, Any] = {
        f"f_{f.attname}": f.get_db_prep_save(getattr(review, f.attname), db) for f in fields
    }
    params |= {"now": now, "active": active, "assignment": assignment_id, "expert": expert.pk}
    written = run_statement(sql, params)
    if not written:
        # Someone else closed it first: a concurrent double submit (answer with its review),
        # or the lease ran out or the item was skipped in between (409, nothing saved).
        current = Assignment.objects.filter(pk=assignment_id).values_list("status", flat=True)
        if current.first() == Assignment.Status.SUBMITTED:
            return _repeated_submit(assignment_id, data), False
        assignment.status = current.first() or assignment.status
        assignment.lease_expires_at = min(assignment.lease_expires_at, now)
        _ensure_live(assignment)
        raise Conflict("This assignment changed while you submitted; nothing was saved.")
    review.pk = written[0][0]
    review._state.adding = False
    review._state.db = connection.alias
    _announce_verdict(review)
    return review, True


def _submit_portable(*, assignment_id: int, expert: User, body: Any) -> tuple[Review, bool]:
    """The same rules through the ORM and a row lock, for the SQLite demo."""
    now = timezone.now()
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        campaign = assignment.campaign
        response_ids = list(
            Response.objects.filter(item_id=assignment.item_id)
            .order_by("position", "id")
            .values_list("pk", flat=True)
        )
        if assignment.status == Assignment.Status.SUBMITTED:
            data = review_parse(campaign=campaign, response_ids=response_ids, body=body)
            return _repeated_submit(assignment.pk, data), False
        _ensure_live(assignment)
        data = review_parse(campaign=campaign, response_ids=response_ids, body=body)
        active = min(
            data.active_seconds if data.active_seconds is not None else 10**9,
            _observed_seconds(assignment, now),
        )
        verdict = _verdict_for(
            campaign=campaign, is_gold=assignment.is_gold, item_id=assignment.item_id, data=data
        )
        review = _new_review(
            assignment=assignment,
            expert=expert,
            data=data,
            active=active,
            verdict=verdict,
            now=now,
        )
        review.save(force_insert=True)
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = now
        assignment.active_seconds = active
        assignment.draft = {}
        assignment.save(update_fields=["status", "finished_at", "active_seconds", "draft"])
        _announce_verdict(review)
    return review, True


def assignment_save_draft(*, assignment_id: int, expert: User, draft: Any) -> Assignment:
    if not isinstance(draft, dict):
        raise ValidationFailed("A draft is a JSON object.", fields={"draft": ["must be an object"]})
    if problem := unstorable(draft):
        raise ValidationFailed(f"The draft {problem}.", fields={"draft": [problem]})
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        _ensure_live(assignment)
        assignment.draft = draft
        assignment.save(update_fields=["draft"])
    return assignment


def progress_keep(*, counts: dict[int, tuple[int, int]], at: datetime) -> None:
    """Keep campaigns' progress counts (items that are not gold, their submitted assignments)
    as counted at `at` (see reviews.selectors.campaigns_progress): one statement per campaign,
    which a count made before the kept one does not overwrite (a page and beat may count at
    once). A campaign deleted meanwhile is passed over."""
    table = CampaignProgress._meta.db_table
    sql = f"""
        INSERT INTO {table} (campaign_id, items, done, counted_at)
        SELECT id, %s, %s, %s FROM {Campaign._meta.db_table} WHERE id = %s
        ON CONFLICT (campaign_id) DO UPDATE
        SET items = excluded.items, done = excluded.done, counted_at = excluded.counted_at
        WHERE {table}.counted_at < excluded.counted_at
    """  # noqa: S608 - the table names are the models'
    for campaign_id, (items, done) in counts.items():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [items, done, at, campaign_id])
        except IntegrityError:
            continue  # the campaign was deleted while this was written


def progress_refresh() -> int:
    """Count again the kept progress of every campaign that is not closed (being worked on, or
    being filled): beat runs it, so pages read large campaigns' progress without counting. A
    closed campaign's is counted once more by the first page after it closed. How many were
    counted."""
    from reviews.selectors import progress_counts  # which imports this module

    ids = list(
        CampaignProgress.objects.exclude(campaign__status=Campaign.Status.CLOSED).values_list(
            "campaign_id", flat=True
        )
    )
    for campaign_id in ids:  # one at a time: each count is short, and so is what it holds
        at = timezone.now()
        progress_keep(counts=progress_counts(campaign_ids=[campaign_id]), at=at)
    return len(ids)
