from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


def _submit_body(payload: dict) -> dict:
    chosen = payload["item"]["responses"][0]["id"]
    return {
        "preference": {"chosen": chosen, "strength": 2},
        "rationale": "A is right.",
        "active_seconds": 5,
    }


def test_it_claims_submits_and_answers_204_when_the_queue_is_dry(
    api_for, expert, pairwise_campaign
):
    ItemFactory.create_batch(2, campaign=pairwise_campaign)
    client = api_for(expert)
    seen = set()
    for _ in range(2):
        res = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/")
        assert res.status_code == 200
        payload = res.json()
        assert payload["item"]["id"] not in seen
        seen.add(payload["item"]["id"])
        assert [r["label"] for r in payload["item"]["responses"]] == ["A", "B"]
        assert all("model" not in r for r in payload["item"]["responses"]), "review is blind"
        sub = client.post(
            f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
            _submit_body(payload),
            format="json",
        )
        assert sub.status_code == 201, sub.json()
        assert sub.json()["verdict"] == "accepted"
    assert client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").status_code == 204
    assert Review.objects.filter(expert=expert).count() == 2


def test_it_returns_the_live_claim_instead_of_a_second_one(api_for, expert, pairwise_campaign):
    ItemFactory.create_batch(3, campaign=pairwise_campaign)
    client = api_for(expert)
    first = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    again = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    assert first["assignment"]["id"] == again["assignment"]["id"]
    assert Assignment.objects.filter(expert=expert).count() == 1


def test_an_expert_cannot_submit_another_experts_assignment(
    api_for, expert, other_expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    payload = api_for(expert).post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    res = api_for(other_expert).post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        _submit_body(payload),
        format="json",
    )
    assert res.status_code == 404
    assert Review.objects.count() == 0
    skip = api_for(other_expert).post(
        f"/api/v1/assignments/{payload['assignment']['id']}/skip/",
        {"reason": "other", "note": "x"},
        format="json",
    )
    assert skip.status_code == 404
    assert Assignment.objects.get().status == "claimed"


def test_a_repeated_submit_stores_one_review_and_answers_the_same(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    first = client.post(url, _submit_body(payload), format="json")
    second = client.post(url, _submit_body(payload), format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Review.objects.count() == 1


def test_a_repeated_submit_with_another_judgement_is_409_and_changes_nothing(
    api_for, expert, pairwise_campaign
):
    """A repeat is answered with the stored review only when it says the same: a client that
    sends another choice, strength or rationale must not be told 200 while its review is
    dropped."""
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    first = client.post(url, _submit_body(payload), format="json")
    assert first.status_code == 201
    other = payload["item"]["responses"][1]["id"]

    changed = client.post(
        url,
        {"preference": {"chosen": other, "strength": 3}, "rationale": "B after all."},
        format="json",
    )

    assert changed.status_code == 409, changed.json()
    error = changed.json()["error"]
    assert error["code"] == "already_submitted"
    assert set(error["fields"]) == {"preference.chosen", "preference.strength", "rationale"}
    assert str(first.json()["id"]) in error["message"]
    review = Review.objects.get()
    assert (review.chosen_id, review.strength, review.rationale) == (
        first.json()["chosen"],
        2,
        "A is right.",
    )
    # The same judgement again, its active time moved on: still the stored review.
    again = client.post(url, _submit_body(payload) | {"active_seconds": 50}, format="json")
    assert again.status_code == 200
    assert again.json() == first.json()


def test_a_repeated_submit_with_an_invalid_body_is_a_400_naming_the_field(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    assert client.post(url, _submit_body(payload), format="json").status_code == 201

    res = client.post(url, {"preference": {"chosen": 987654}}, format="json")

    assert res.status_code == 400
    assert "preference.chosen" in res.json()["error"]["fields"]
    assert Review.objects.count() == 1


def test_a_late_submit_on_an_expired_lease_is_409_and_saves_nothing(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    Assignment.objects.filter(pk=payload["assignment"]["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        _submit_body(payload),
        format="json",
    )
    assert res.status_code == 409
    assert res.json()["error"]["code"] == "lease_expired"
    assert Review.objects.count() == 0


def test_an_unknown_response_id_or_bad_strength_names_the_field(api_for, expert, pairwise_campaign):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"preference": {"chosen": 987654, "strength": 9}},
        format="json",
    )
    assert res.status_code == 400
    fields = res.json()["error"]["fields"]
    assert "987654 is not a response of this item" in fields["preference.chosen"][0]
    assert "preference.strength" in fields
    assert Review.objects.count() == 0
    assert Assignment.objects.get().status == "claimed"


def _claimed_pair(client, campaign) -> tuple[int, str]:
    """One new item of the pairwise `campaign`, claimed through `client`: (its first
    response's id, the claim's submit URL)."""
    ItemFactory(campaign=campaign)
    payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    return payload["item"]["responses"][0]["id"], url


def test_a_misspelt_key_inside_a_preference_or_correction_is_named_not_dropped(
    api_for, expert, pairwise_campaign
):
    client = api_for(expert)
    chosen, url = _claimed_pair(client, pairwise_campaign)
    res = client.post(url, {"preference": {"chosen": chosen, "strenght": 3}}, format="json")
    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "preference.strenght": ["is not a field of a preference"]
    }
    assert Review.objects.count() == 0
    res = client.post(
        url, {"preference": {"chosen": chosen}, "rationalle": "A is right."}, format="json"
    )
    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"rationalle": ["is not a field of a review"]}

    correction = CampaignFactory(kind="correction")
    ItemFactory(campaign=correction)
    payload = client.post(f"/api/v1/campaigns/{correction.pk}/next/").json()
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"correction": {"text": "Fixed.", "respone": payload["item"]["responses"][0]["id"]}},
        format="json",
    )
    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "correction.respone": ["is not a field of a correction"]
    }


def _claimed_rating(client, engineer) -> tuple[int, str]:
    """A rating campaign of one item (its rubric: accuracy 1-5), claimed through `client`:
    (its response's id, the claim's submit URL)."""
    campaign = CampaignFactory(
        kind="rating",
        created_by=engineer,
        rubric=[{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5, "anchors": {}}],
    )
    ItemFactory(campaign=campaign)
    payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    url = f"/api/v1/assignments/{payload['assignment']['id']}/submit/"
    return payload["item"]["responses"][0]["id"], url


def test_a_rating_off_the_scale_is_rejected(api_for, expert, engineer):
    client = api_for(expert)
    rid, url = _claimed_rating(client, engineer)
    bad = client.post(url, {"ratings": {str(rid): {"accuracy": 6}}}, format="json")
    assert bad.status_code == 400
    assert f"ratings.{rid}.accuracy" in bad.json()["error"]["fields"]
    good = client.post(url, {"ratings": {str(rid): {"accuracy": 4}}}, format="json")
    assert good.status_code == 201
    assert good.json()["ratings"] == {str(rid): {"accuracy": 4}}


def test_missing_scores_are_named_beside_a_key_that_only_starts_like_the_response(
    api_for, expert, engineer
):
    client = api_for(expert)
    rid, url = _claimed_rating(client, engineer)
    # `{rid}0` is no response of the item; the response itself still has no scores.
    res = client.post(url, {"ratings": {f"{rid}0": {"accuracy": 4}}}, format="json")

    assert res.status_code == 400
    fields = res.json()["error"]["fields"]
    assert fields[f"ratings.{rid}"] == ["missing scores for accuracy"], fields
    assert f"ratings.{rid}0" in fields
    assert Review.objects.count() == 0


def test_one_response_rated_under_two_keys_is_a_400_naming_the_second(api_for, expert, engineer):
    client = api_for(expert)
    first, url = _claimed_rating(client, engineer)
    # "7" and "07" are both response 7: the scores disagree, and neither may win unsaid.
    body = {"ratings": {str(first): {"accuracy": 5}, f"0{first}": {"accuracy": 1}}}

    res = client.post(url, body, format="json")

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        f"ratings.0{first}": [f"rates response {first} again (it is rated as '{first}' already)"]
    }
    assert Review.objects.count() == 0


@pytest.mark.parametrize("count", [-1, 2**31, 10**4000, 1.5, True])
def test_a_pasted_count_that_is_not_one_is_a_400(api_for, expert, pairwise_campaign, count):
    client = api_for(expert)
    chosen, url = _claimed_pair(client, pairwise_campaign)

    res = client.post(
        url, {"preference": {"chosen": chosen}, "pasted_chars": {"rationale": count}}, format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "pasted_chars": ["must map field names to character counts (0 to 2,147,483,647)"]
    }
    assert Review.objects.count() == 0


def test_a_skipped_item_is_not_offered_again_and_its_slot_returns(
    api_for, expert, other_expert, pairwise_campaign
):
    item = ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/skip/",
        {"reason": "outside_expertise"},
        format="json",
    )
    assert res.status_code == 200
    assert client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").status_code == 204
    item.refresh_from_db()
    assert item.queue.open_slots == 1
    other = api_for(other_expert).post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/")
    assert other.json()["item"]["id"] == item.pk


def test_a_skip_note_is_kept_as_typed_through_the_api_as_on_the_page(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    skip = f"/api/v1/assignments/{payload['assignment']['id']}/skip/"
    body = {"reason": "other", "note": "  too close to my own work\n"}

    assert client.post(skip, body, format="json").status_code == 200
    assert Assignment.objects.get().skip_note == "  too close to my own work\n"
    assert client.post(skip, body, format="json").status_code == 200, "the same skip again"


@pytest.mark.parametrize(
    "note",
    [
        "",
        "  \n",
        "\u200b",
        " \u200b\u2060\ufeff ",
        "\u3164",
        "\u115f\u1160",
        "\u3164 \u2800",
        "\ufe0f",
    ],
)
def test_a_skip_for_another_reason_needs_a_note_that_says_something(
    api_for, expert, pairwise_campaign, note
):
    # A zero-width space is no note: the lead reading the skip learns nothing from it.
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()

    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/skip/",
        {"reason": "other", "note": note},
        format="json",
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {"note": ["required when reason is other"]}
    assert Assignment.objects.get().status == Assignment.Status.CLAIMED


def test_the_client_reported_active_time_is_capped_by_what_the_server_saw(
    api_for, expert, pairwise_campaign
):
    ItemFactory(campaign=pairwise_campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
    Assignment.objects.filter(pk=payload["assignment"]["id"]).update(
        claimed_at=timezone.now() - timedelta(seconds=90)
    )
    body = _submit_body(payload) | {"active_seconds": 100_000}
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/", body, format="json"
    )
    assert 90 <= res.json()["active_seconds"] <= 95


def test_outsiders_get_no_campaign_and_no_work(api_for, expert, engineer):
    hidden = CampaignFactory(required_skills=["tax-law"], created_by=engineer)
    ItemFactory(campaign=hidden)
    client = api_for(expert)
    assert client.get(f"/api/v1/campaigns/{hidden.pk}/").status_code == 404
    assert client.post(f"/api/v1/campaigns/{hidden.pk}/next/").status_code == 404
    assert hidden.pk not in [c["id"] for c in client.get("/api/v1/campaigns/").json()]


def test_anonymous_requests_are_401(client, pairwise_campaign):
    res = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/")
    assert res.status_code == 401
    assert "error" in res.json()


def test_the_claim_and_submit_statements_are_prepared_once_per_connection(
    api_for, expert, pairwise_campaign
):
    """Django turns prepared statements off unless asked; the settings ask (DB_PREPARED_STATEMENTS),
    so PostgreSQL parses and plans the claim and submit statements once, not on every call;
    from their 10th call on a connection, so the plan kept is not one made for a nearly empty
    assignments table."""
    from django.db import connection

    def prepared_statements() -> list[tuple[str, int, int]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
            return list(cursor.fetchall())

    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    ItemFactory.create_batch(threshold + 2, campaign=pairwise_campaign)
    client = api_for(expert)
    for n in range(threshold + 2):
        if n == threshold:
            # The first calls were planned each time; none of them was kept.
            assert not any("reviews_assignment" in s for s, _, _ in prepared_statements())
        payload = client.post(f"/api/v1/campaigns/{pairwise_campaign.pk}/next/").json()
        res = client.post(
            f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
            _submit_body(payload),
            format="json",
        )
        assert res.status_code == 201
    rows = prepared_statements()
    prepared = [statement for statement, _, _ in rows]
    assert any("INSERT INTO reviews_assignment" in s for s in prepared), prepared
    assert any("INSERT INTO reviews_review" in s for s in prepared), prepared
    # One entry per statement text, reused by the later calls rather than prepared again.
    assert len(prepared) == len(set(prepared))
    # And planned once: the generic plan every time, never a plan made for one call.
    claim = next(row for row in rows if "INSERT INTO reviews_assignment (" in row[0])
    assert (claim[1], claim[2]) == (2, 0), [(" ".join(s.split())[:50], g, c) for s, g, c in rows]
    assert all(custom == 0 for _, _, custom in rows), rows


def test_a_review_carries_its_assignments_campaign_item_and_expert(
    api_for, expert, other_expert, engineer
):
    """Review.campaign, item and expert, and Assignment.campaign, have no database
    constraints of their own (see the models): the claim and the submit copy them from the
    rows they write, so they must match, here across two campaigns and a gold item."""
    from django.db.models import F, Q

    campaigns = [CampaignFactory(kind="pairwise", created_by=engineer, overlap=2) for _ in range(2)]
    for campaign in campaigns:
        ItemFactory.create_batch(2, campaign=campaign)
    gold_campaign = CampaignFactory(kind="pairwise", created_by=engineer, gold_rate=1.0, overlap=2)
    ItemFactory(campaign=gold_campaign, is_gold=True, gold_answer={"chosen_position": 0})
    ItemFactory(campaign=gold_campaign)  # gold is served beside queue work, not on its own
    for user in (expert, other_expert):
        client = api_for(user)
        for campaign in [*campaigns, *campaigns, gold_campaign]:
            payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
            res = client.post(
                f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
                _submit_body(payload),
                format="json",
            )
            assert res.status_code == 201, res.json()
    assert Review.objects.count() == 10
    assert Assignment.objects.filter(is_gold=True).count() == 2
    assert not Assignment.objects.exclude(campaign_id=F("item__campaign_id")).exists()
    mismatched = Review.objects.exclude(
        Q(campaign_id=F("assignment__campaign_id"))
        & Q(item_id=F("assignment__item_id"))
        & Q(expert_id=F("assignment__expert_id"))
    )
    assert not mismatched.exists()


def test_the_database_still_refuses_to_delete_an_item_with_reviews(api_for, expert, engineer):
    """Without a constraint on Review.item, the assignment's constraint on its item still
    stops a delete that bypasses Django (Django itself refuses it: PROTECT). A ranking
    review links to no response, so only that constraint is left to stop it."""
    from django.db import IntegrityError, connection, transaction

    campaign = CampaignFactory(kind="ranking", created_by=engineer)
    item = ItemFactory(campaign=campaign)
    client = api_for(expert)
    payload = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    ranking = [r["id"] for r in payload["item"]["responses"]]
    res = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"ranking": ranking},
        format="json",
    )
    assert res.status_code == 201, res.json()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("DELETE FROM feedback_queueentry WHERE item_id = %s", [item.pk])
        cursor.execute("DELETE FROM feedback_response WHERE item_id = %s", [item.pk])
        with pytest.raises(IntegrityError) as refused:
            cursor.execute("DELETE FROM feedback_item WHERE id = %s", [item.pk])
        transaction.set_rollback(True)
    assert "reviews_assignment" in str(refused.value)
    assert Review.objects.filter(item=item).exists()


@pytest.mark.django_db(transaction=True)
def test_a_queue_row_left_behind_by_a_raw_delete_is_dropped_and_the_claim_goes_on(
    api_for, expert, engineer
):
    """Queue rows have no database constraint to their item. An item deleted in raw SQL
    leaves its row behind; a claim that picks it fails on the assignment's constraint, drops
    the campaign's rows without an item, and claims the next item instead of answering 204."""
    from django.db import connection

    from feedback.models import QueueEntry

    campaign = CampaignFactory(kind="pairwise", created_by=engineer)
    gone = ItemFactory(campaign=campaign, priority=9)
    kept = ItemFactory(campaign=campaign)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM feedback_response WHERE item_id = %s", [gone.pk])
        cursor.execute("DELETE FROM feedback_item WHERE id = %s", [gone.pk])
    assert QueueEntry.objects.filter(pk=gone.pk, open_slots__gt=0).exists()
    res = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert res.status_code == 200, res.content
    assert res.json()["item"]["id"] == kept.pk
    assert list(QueueEntry.objects.values_list("pk", flat=True)) == [kept.pk]


def test_every_response_of_a_long_ranking_has_a_label_of_its_own(api_for, expert):
    campaign = CampaignFactory(kind="ranking")
    ItemFactory(campaign=campaign, responses=30)
    payload = api_for(expert).post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    labels = [r["label"] for r in payload["item"]["responses"]]
    assert labels == [*"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "AA", "AB", "AC", "AD"]


def test_the_claim_and_submit_give_whole_instances_without_reading_them_again(
    expert, pairwise_campaign
):
    """The claim's assignment and the submit's review are made from what the statements wrote
    and read: every field as stored, nothing loaded afterwards, and the submit is two
    statements (its read and its write)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reviews import services

    ItemFactory(campaign=pairwise_campaign)
    claimed = services.assignment_claim(campaign=pairwise_campaign, expert=expert)
    assert claimed is not None
    fields = [f.attname for f in Assignment._meta.concrete_fields]
    with CaptureQueriesContext(connection) as after_claim:
        claimed_values = {name: getattr(claimed, name) for name in fields}
        related = (claimed.campaign, claimed.expert)
    assert claimed_values == {
        name: getattr(Assignment.objects.get(pk=claimed.pk), name) for name in fields
    }
    assert related == (pairwise_campaign, expert)

    body = {"preference": {"chosen": claimed.response_order[1], "strength": 3}, "rationale": "B."}
    with CaptureQueriesContext(connection) as submitting:
        review, created = services.review_submit(assignment_id=claimed.pk, expert=expert, body=body)
        review_fields = [f.attname for f in Review._meta.concrete_fields]
        review_values = {name: getattr(review, name) for name in review_fields}
        assert review.expert == expert
    assert created
    assert after_claim.captured_queries == []

    def statements(captured: list[dict]) -> list[str]:
        # Not the savepoints the test's own transaction puts around each.
        return [q["sql"] for q in captured if "SAVEPOINT" not in q["sql"]]

    assert len(statements(submitting.captured_queries)) == 2, submitting.captured_queries
    assert review_values == {
        name: getattr(Review.objects.get(pk=review.pk), name) for name in review_fields
    }
    assert review_values["chosen_id"] == claimed.response_order[1]
    assert review_values["strength"] == 3
