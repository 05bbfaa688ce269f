"""Reads on the hot path (feedback/rows.py) give the values the ORM gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models
from django.test.utils import CaptureQueriesContext, isolate_apps
from django.utils import timezone

from feedback.api_keys import key_and_owner
from feedback.models import ApiKey, Campaign, Item, Response, User
from feedback.rows import Columns, read
from feedback.selectors import campaign_get_for_user
from feedback.services import api_key_create
from reviews.models import Assignment
from reviews.selectors import assignment_payload
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db

UNICODE = 'Ünïcödé ✓ 中文 \u2028 "quoted" \\ back'


def _values(instance: models.Model) -> dict[str, Any]:
    """Every concrete column's value, with a time's offset beside it (equal instants in other
    zones would compare equal)."""
    out: dict[str, Any] = {}
    for field in type(instance)._meta.concrete_fields:
        value = getattr(instance, field.attname)
        out[field.attname] = (type(value).__name__, value)
        if isinstance(value, datetime):
            out[field.attname + "/offset"] = value.utcoffset()
    return out


def test_a_campaign_read_by_id_holds_every_value_the_orm_reads() -> None:
    engineer = UserFactory(role=User.Role.ENGINEER)
    campaign = CampaignFactory(
        instructions=UNICODE,
        rubric=[{"key": "accuracy", "label": UNICODE, "scale": [1, 5], "weight": 0.25}],
        required_skills=["law", UNICODE],
        gold_rate=0.125,
        pay={"currency": "EUR", "per_review": 250, "nested": {"a": [1.5, None, True]}},
        generation_models=[{"model": "m", "temperature": 0.7}],
        lease_minutes=45,
        created_by=engineer,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )
    read = campaign_get_for_user(user=engineer, campaign_id=campaign.pk)
    assert _values(read) == _values(Campaign.objects.get(pk=campaign.pk))


def test_a_key_and_its_owner_hold_every_value_the_orm_reads() -> None:
    owner = UserFactory(role=User.Role.LEAD, first_name=UNICODE, is_staff=True)
    User.objects.filter(pk=owner.pk).update(last_login=timezone.now())
    raw_key = api_key_create(user=owner, name="k")[1]
    ApiKey.objects.filter(user=owner).update(
        last_used_at=datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    )
    found = key_and_owner(raw_key)
    assert found is not None
    user, key = found
    assert _values(user) == _values(User.objects.get(pk=owner.pk))
    stored = ApiKey.objects.get(user=owner)
    assert (key.pk, key.user_id, key.last_used_at) == (stored.pk, owner.pk, stored.last_used_at)
    assert key.last_used_at is not None
    assert key.last_used_at.utcoffset() == stored.last_used_at.utcoffset()
    assert key.user is user


def test_a_claims_payload_shows_the_item_and_responses_as_stored() -> None:
    campaign = CampaignFactory(kind=Campaign.Kind.RANKING)
    prompt = [{"role": "system", "content": UNICODE}, {"role": "user", "content": "Rank these."}]
    item = ItemFactory(campaign=campaign, prompt=prompt, context={"doc": UNICODE, "n": [1, 2.5]})
    Response.objects.create(item=item, position=5, text=UNICODE, format="markdown", images=[])
    expert = UserFactory()
    responses = list(Response.objects.filter(item=item).order_by("-pk"))
    assignment = Assignment.objects.create(
        campaign=campaign,
        item=item,
        expert=expert,
        lease_expires_at=timezone.now(),
        response_order=[r.pk for r in responses],
    )
    payload = assignment_payload(assignment=assignment)
    stored = Item.objects.get(pk=item.pk)
    assert payload["item"]["prompt"] == stored.prompt
    assert payload["item"]["context"] == stored.context
    shown = [(r["id"], r["text"], r["format"], r["images"]) for r in payload["item"]["responses"]]
    assert shown == [(r.pk, r.text, r.format, r.images) for r in responses]
    json.dumps(payload)  # what the API answers is JSON as it stands


class _Decoded(json.JSONDecoder):
    pass


@isolate_apps("feedback")
def test_columns_refuse_a_column_whose_value_psycopg_would_read_otherwise() -> None:
    class Odd(models.Model):
        data = models.JSONField(decoder=_Decoded)
        address = models.GenericIPAddressField()

        class Meta:
            app_label = "feedback"

        def __str__(self) -> str:
            return str(self.pk)

    with pytest.raises(ImproperlyConfigured, match=r"Odd\.data \(JSONField\)"):
        Columns(Odd)
    with pytest.raises(ImproperlyConfigured, match=r"Odd\.address \(GenericIPAddressField\)"):
        Columns(Odd, ["id", "address"])
    with pytest.raises(ImproperlyConfigured, match=r"Odd has no column \['dta'\]"):
        Columns(Odd, ["id", "dta"])
    Columns(Odd, ["id"])  # the other columns are read as they are


def test_columns_asked_in_any_order_are_read_in_the_models() -> None:
    item = ItemFactory()
    response = Response.objects.filter(item=item).order_by("pk").first()
    assert response is not None
    columns = Columns(Response, ["text", "images", "id"])
    (read_back,) = read(
        f"SELECT {columns.select('r')} FROM feedback_response r WHERE r.id = %s",  # noqa: S608
        [response.pk],
        columns,
    )[0]
    assert isinstance(read_back, Response)
    assert (read_back.pk, read_back.text, read_back.images) == (
        response.pk,
        response.text,
        response.images,
    )


def test_the_hot_statements_are_in_djangos_query_log_when_it_keeps_one(api_for, expert) -> None:
    # Tests that count queries (and DEBUG's connection.queries) see them as Django's own.
    campaign = CampaignFactory(overlap=1)
    ItemFactory(campaign=campaign)
    with CaptureQueriesContext(connection) as queries:
        res = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert res.status_code == 200, res.json()
    logged = [q["sql"] for q in queries.captured_queries]
    assert any("FROM feedback_campaign c WHERE c.id" in sql for sql in logged), logged
    assert any("UNION ALL" in sql and "feedback_response" in sql for sql in logged), logged
    assert any("feedback_queueentry" in sql for sql in logged), logged  # the claim


@pytest.mark.django_db(transaction=True)
def test_statements_keep_one_cursor_per_connection_and_outlive_errors_and_reconnections() -> None:
    from django.db import IntegrityError

    from feedback.rows import run_statement

    assert run_statement("SELECT %(n)s::int", {"n": 1}) == [(1,)]
    kept = connection._rows_cursor  # type: ignore[attr-defined]
    assert run_statement("SELECT %(n)s::int + 1", {"n": 1}) == [(2,)]
    assert connection._rows_cursor is kept  # type: ignore[attr-defined]

    # A statement that fails leaves the next one its answer, on the same cursor.
    campaign = CampaignFactory()
    with pytest.raises(IntegrityError):
        run_statement("INSERT INTO feedback_campaign (id) VALUES (%(id)s)", {"id": campaign.pk})
    assert run_statement("SELECT %(n)s::int", {"n": 3}) == [(3,)]
    assert connection._rows_cursor is kept  # type: ignore[attr-defined]

    # A new connection gets a cursor of its own.
    connection.close()
    assert run_statement("SELECT %(n)s::int", {"n": 4}) == [(4,)]
    assert connection._rows_cursor is not kept  # type: ignore[attr-defined]
    assert connection._rows_cursor.connection is connection.connection  # type: ignore[attr-defined]


def _made(instance: models.Model) -> tuple[Any, ...]:
    values = {k: v for k, v in instance.__dict__.items() if k != "_state"}
    return (
        type(instance),
        values,
        instance._state.adding,
        instance._state.db,
        instance.get_deferred_fields(),
    )


def test_an_instance_made_from_columns_is_the_one_from_db_makes() -> None:
    campaign = CampaignFactory(rubric=[{"key": "a", "label": "A", "scale": [1, 5]}])
    some = Columns(Campaign, ["id", "kind", "rubric", "acceptance"])
    every = Columns(Campaign)
    row = list(Campaign.objects.filter(pk=campaign.pk).values_list(*every.attnames).get())
    by_name = dict(zip(every.attnames, row, strict=True))

    for columns in (some, every):
        values = [by_name[name] for name in columns.attnames]
        expected = Campaign.from_db("default", columns.attnames, list(values))
        assert _made(columns.make(values)) == _made(expected)
        assert _made(columns.known(by_name)) == _made(expected)
    made = some.known(by_name)
    # Columns not read are loaded when asked for, links are followed, saving updates.
    assert made.name == campaign.name
    assert made.created_by == campaign.created_by
    made.save(update_fields=["rubric"])


def test_an_instance_someone_listens_for_is_made_by_its_constructor() -> None:
    campaign = CampaignFactory()
    heard: list[Any] = []

    def listener(sender: Any, instance: Any, **kwargs: Any) -> None:
        heard.append(instance)

    columns = Columns(Campaign, ["id", "kind"])
    models.signals.post_init.connect(listener, sender=Campaign)
    try:
        made = columns.make([campaign.pk, campaign.kind])
    finally:
        models.signals.post_init.disconnect(listener, sender=Campaign)
    assert heard == [made]
    assert made is not None
    assert made.kind == campaign.kind
    columns.make([campaign.pk, campaign.kind])
    assert len(heard) == 1


@isolate_apps("feedback")
def test_a_model_that_does_more_when_made_is_made_by_its_constructor() -> None:
    set_on: list[str] = []

    class Traced(models.Model):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "feedback"

        def __str__(self) -> str:
            return self.name

        def __setattr__(self, name: str, value: Any) -> None:
            set_on.append(name)
            super().__setattr__(name, value)

    class Pictured(models.Model):
        # Its descriptor reads the picture's dimensions when it is set.
        picture = models.ImageField(width_field="width")
        width = models.IntegerField(null=True)

        class Meta:
            app_label = "feedback"

        def __str__(self) -> str:
            return str(self.pk)

    made = Columns(Traced).make([1, "a"])
    assert made is not None
    assert made.name == "a"
    assert {"id", "name"} <= set(set_on)
    assert not Columns(Pictured)._plain
    assert Columns(Pictured, ["id", "width"])._plain
    assert Columns(Campaign)._plain
