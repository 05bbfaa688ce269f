"""The quick check of plain items agrees with the full validation, value for value."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.item_input import item_parse, item_parse_plain
from tests.feedback.factories import CampaignFactory

pytestmark = pytest.mark.django_db

PAIR = [{"model": "m-a", "text": "A"}, {"model": " m-b ", "text": "B", "format": "code"}]
VALID: list[dict[str, Any]] = [
    {"prompt": "Q?", "responses": PAIR},
    {"prompt": [{"role": "user", "content": "Q?"}], "responses": PAIR, "external_id": "e-1"},
    {"prompt": "Q?", "external_id": 7, "priority": -3, "is_gold": True, "gold_answer": None},
    {"prompt": "Q?", "context": None, "metadata": None, "responses": None},
    {"prompt": "Q?", "context": {"k": [1, {"b": 2, "a": 1}]}, "metadata": {"m": 1}},
    {"prompt": "Q?", "responses": [{"model": "a", "text": "A", "images": []}, PAIR[1]]},
]
# Each differs from a valid item in one way the quick check must not let through.
NOT_PLAIN: list[Any] = [
    {"prompt": "Q?", "extra": 1},
    {"prompt": "  "},
    {"prompt": []},
    {"prompt": [{"role": "robot", "content": "x"}]},
    {"prompt": [{"role": ["user"], "content": "x"}]},
    {"prompt": [{"role": "user", "content": 5}]},
    {"prompt": [{"role": "user", "content": "x", "images": [{"id": 1}]}]},
    {"prompt": 5},
    {"prompt": "Q?", "context": []},
    {"prompt": "Q?", "context": {"images": [{"id": 1}]}},
    {"prompt": "Q?", "metadata": "m"},
    {"prompt": "Q?", "external_id": ""},
    {"prompt": "Q?", "external_id": True},
    {"prompt": "Q?", "external_id": "x" * 201},
    {"prompt": "Q?", "priority": True},
    {"prompt": "Q?", "priority": 1001},
    {"prompt": "Q?", "is_gold": 1},
    {"prompt": "Q?", "is_gold": True, "gold_answer": {"chosen_position": 1}},  # checked there
    {"prompt": "Q?", "responses": {"model": "a"}},
    {"prompt": "Q?", "responses": [PAIR[0]]},
    {"prompt": "Q?", "responses": [*PAIR, PAIR[0]]},
    {"prompt": "Q?", "responses": [{"model": " ", "text": "A"}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "m" * 201, "text": "A"}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": 1}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": ""}, PAIR[1]]},
    {"prompt": "Q?", "responses": [PAIR[0], {"model": "b", "text": " \n\u3000"}]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": "A", "format": "pdf"}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": "A", "format": ["code"]}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": "A", "seed": 1}, PAIR[1]]},
    {"prompt": "Q?", "responses": [{"model": "a", "text": "A", "images": [{"id": 1}]}, PAIR[1]]},
]


@pytest.mark.parametrize("raw", VALID)
def test_a_plain_item_parses_the_same_both_ways(raw, pairwise_campaign):
    plain = item_parse_plain(raw, pairwise_campaign.responses_wanted)

    assert plain is not None
    assert item_parse(raw, campaign=pairwise_campaign) == (plain, {})


@pytest.mark.parametrize("raw", NOT_PLAIN)
def test_anything_else_is_left_to_the_full_validation(raw, pairwise_campaign):
    assert item_parse_plain(raw, pairwise_campaign.responses_wanted) is None


def test_a_role_or_format_that_is_not_a_string_is_an_error_not_a_crash(pairwise_campaign):
    raw = {
        "prompt": [{"role": ["user"], "content": "x"}],
        "responses": [{"model": "a", "text": "A", "format": {}}, PAIR[1]],
    }
    item, errors = item_parse(raw, campaign=pairwise_campaign)

    assert item is None
    assert set(errors) == {"prompt[0].role", "responses[0].format"}


def test_each_forked_process_stores_responses_in_its_own_random_order():
    # Celery's pool processes are forked from one parent that imported this module: their
    # storage orders must not repeat one another's.
    import multiprocessing

    from feedback.item_input import in_storage_order

    def flips(out) -> None:
        out.put([in_storage_order([0, 1])[0] for _ in range(64)])

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=flips, args=(out,)) for _ in range(2)]
    for child in children:
        child.start()
    first, second = out.get(timeout=30), out.get(timeout=30)
    for child in children:
        child.join(timeout=30)

    assert first != second  # alike by chance: 1 in 2^64
    assert set(first) == {0, 1}


@pytest.mark.parametrize(
    ("kind", "is_gold", "gold_answer", "problem"),
    [
        ("pairwise", False, {"chosen_position": 0}, "is only for gold items (is_gold: true)"),
        ("rating", True, {"chosen_position": 0}, "cannot be checked in a rating campaign"),
        ("pairwise", True, {"chosen": "model-a"}, 'must be {"chosen_position": 0 or 1}'),
        ("pairwise", True, "model-a", 'must be {"chosen_position": 0 or 1}'),
        ("pairwise", True, {"chosen_position": "0"}, "chosen_position must be 0 or 1, got '0'"),
        ("pairwise", True, {"chosen_position": 7}, "chosen_position must be 0 or 1, got 7"),
        ("pairwise", True, {"chosen_position": True}, "chosen_position must be 0 or 1, got true"),
    ],
)
def test_a_gold_answer_that_could_not_be_checked_is_refused(kind, is_gold, gold_answer, problem):
    """A gold answer that is never compared (or never matches) would pass, or fail, every
    review of its item: the experts' pay would follow a typo."""
    campaign = CampaignFactory(kind=kind)
    raw = {"prompt": "Q?", "is_gold": is_gold, "gold_answer": gold_answer}

    item, errors = item_parse(raw, campaign=campaign)

    assert item is None
    assert list(errors) == ["gold_answer"]
    assert problem in errors["gold_answer"][0]


def test_a_pairwise_gold_answer_is_kept_with_its_position_as_an_integer(pairwise_campaign):
    raw = {"prompt": "Q?", "is_gold": True, "gold_answer": {"chosen_position": 1.0}}

    item, errors = item_parse(raw, campaign=pairwise_campaign)

    assert errors == {}
    assert item is not None
    assert item.gold_answer == {"chosen_position": 1}
    assert type(item.gold_answer["chosen_position"]) is int
