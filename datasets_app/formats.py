"""The rows of each export format, and their Arrow schemas.

`item_rows` turns one item (its responses and included reviews) into the rows of the
recipe's format, each with a sort key (used to diff versions) and the ids of the reviews
it came from (its lineage). Why an item gives no row is counted in `drops`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datasets_app.aggregation import (
    Consensus,
    consensus_of,
    corrections_of,
    distinct_pairs,
    judgement_of,
    margin_of,
    mean_rating,
)
from datasets_app.recipe import Recipe
from datasets_app.source import SourceItem, SourceResponse, SourceReview

# An expert's rewrite is the strongest statement of preference there is: the top of the 1-3 scale.
CORRECTION_MARGIN = 3.0
TRL_ROLES = {"system", "user", "assistant", "tool"}


class BuildError(Exception):
    """Data the build cannot turn into rows; the message names the item."""


@dataclass(slots=True)
class Row:
    key: str
    data: dict[str, Any]
    review_ids: list[int]


class Pseudonyms:
    """Stable, salted pseudonyms: the same name gives the same pseudonym within one dataset."""

    def __init__(self, salt: str) -> None:
        self._key = salt.encode()
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, value: object) -> str:
        cache_key = (kind, str(value))
        found = self._cache.get(cache_key)
        if found is None:
            digest = hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
            found = self._cache[cache_key] = f"{kind}-{digest[:10]}"
        return found


# --- prompts -----------------------------------------------------------------


def _fold_context(context: Any) -> str:
    """The parts of an item's context a model must see, as text appended to the last user turn."""
    if not context or not isinstance(context, dict):
        return ""
    parts: list[str] = []
    if isinstance(context.get("repo"), str) and context["repo"]:
        parts.append(f"Repository: {context['repo']}")
    if isinstance(context.get("text"), str) and context["text"]:
        parts.append(context["text"])
    if isinstance(context.get("sections"), list):
        for section in context["sections"]:
            if isinstance(section, dict):
                heading, text = section.get("heading", ""), section.get("text", "")
                parts.append(f"{heading}\n{text}".strip())
    if isinstance(context.get("diff"), str) and context["diff"]:
        parts.append(f"```diff\n{context['diff']}\n```")
    return "\n\n".join(p for p in parts if p)


def prompt_messages(item: SourceItem) -> list[dict[str, str]]:
    """The item's prompt as chat messages, its context folded into the last user turn.

    `developer` (OpenAI's newer name for the system turn) becomes `system`, which every
    chat template knows.
    """
    prompt = item.prompt
    name = item.external_id or str(item.pk)
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        messages = []
        for index, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise BuildError(
                    f"Item {name!r}: prompt[{index}] is not a message with string content."
                )
            role = "system" if message.get("role") == "developer" else message.get("role")
            if role not in TRL_ROLES:
                raise BuildError(f"Item {name!r}: prompt[{index}] has an unknown role {role!r}.")
            messages.append({"role": role, "content": message["content"]})
    else:
        raise BuildError(
            f"Item {name!r}: the prompt is neither a string nor a list of chat messages."
        )
    extra = _fold_context(item.context)
    if extra:
        for message in reversed(messages):
            if message["role"] == "user":
                message["content"] = f"{message['content']}\n\n{extra}"
                break
        else:
            messages.append({"role": "user", "content": extra})
    return messages


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --- rows per format -----------------------------------------------------------


def _flagged(item: SourceItem, recipe: Recipe) -> bool:
    if recipe.exclude_flagged is False:
        return False
    if recipe.exclude_flagged is True:
        return any(r.flags for r in item.reviews)
    wanted = set(recipe.exclude_flagged)
    return any(wanted.intersection(r.flags) for r in item.reviews)


def _passes_votes(consensus: Consensus, recipe: Recipe, drops: Counter[str]) -> bool:
    if consensus.votes < recipe.min_votes:
        drops["too_few_votes"] += 1
        return False
    if recipe.min_agreement is not None and consensus.agreement < recipe.min_agreement:
        drops["low_agreement"] += 1
        return False
    return True


def _weight(review: SourceReview, recipe: Recipe) -> float:
    return review.trust if recipe.aggregation == "trust_weighted" else 1.0


def _picked_corrections(item: SourceItem, recipe: Recipe) -> list[SourceReview]:
    found = corrections_of(item)
    if recipe.aggregation == "all_pairs" or not found:
        return found
    # One rewrite per item: the most trusted expert's (under majority every weight is 1),
    # the latest on a tie.
    return [max(found, key=lambda r: (_weight(r, recipe), r.id))]


def _key(item: SourceItem, suffix: str) -> str:
    return f"{item.pk:012d}/{suffix}"


def _preference_rows(
    item: SourceItem, recipe: Recipe, prompt: list[dict[str, str]], drops: Counter[str]
) -> list[Row]:
    """dpo / openai-dpo: (prompt, chosen, rejected) plus the facts behind the pair."""
    texts = {r.id: r.text for r in item.responses}
    item_id = item.external_id or str(item.pk)
    rows: list[Row] = []
    corrections = _picked_corrections(item, recipe)
    for review in corrections:
        original = texts[review.correction_response_id]  # type: ignore[index]
        if review.correction_text.strip() == original.strip():
            drops["correction_unchanged"] += 1
            continue
        suffix = f"c/{review.id:012d}" if recipe.aggregation == "all_pairs" else "c"
        rows.append(
            Row(
                _key(item, suffix),
                {
                    "prompt": prompt,
                    "chosen": assistant(review.correction_text),
                    "rejected": assistant(original),
                    "item_id": item_id,
                    "source": "correction",
                    "margin": CORRECTION_MARGIN,
                    "votes": 1,
                    "agreement": 1.0,
                },
                [review.id],
            )
        )
    if len(item.responses) < 2:
        if not corrections:
            drops["single_response"] += 1
        return rows
    trust = recipe.aggregation == "trust_weighted"
    consensus = consensus_of(item, trust_weighted=trust)
    if consensus is None:
        if not corrections:
            drops["no_preference"] += 1
        return rows
    if recipe.aggregation == "all_pairs":
        opposite = {(p.winner, p.loser): p.votes for p in distinct_pairs(item)}
        for pair in distinct_pairs(item):
            against = opposite.get((pair.loser, pair.winner), 0)
            agreement = round(pair.votes / (pair.votes + against), 4)
            if pair.votes < recipe.min_votes:
                drops["too_few_votes"] += 1
                continue
            if recipe.min_agreement is not None and agreement < recipe.min_agreement:
                drops["low_agreement"] += 1
                continue
            rows.append(
                Row(
                    _key(item, f"p/{pair.winner:012d}>{pair.loser:012d}"),
                    {
                        "prompt": prompt,
                        "chosen": assistant(texts[pair.winner]),
                        "rejected": assistant(texts[pair.loser]),
                        "item_id": item_id,
                        "source": "preference",
                        "margin": round(sum(pair.strengths) / len(pair.strengths), 4),
                        "votes": pair.votes,
                        "agreement": agreement,
                    },
                    sorted(pair.review_ids),
                )
            )
        return rows
    if consensus.tie_at_top or consensus.all_tied:
        drops["tie"] += 1
        return rows
    if not _passes_votes(consensus, recipe, drops):
        return rows
    chosen, rejected = consensus.order[0], consensus.order[-1]
    rows.append(
        Row(
            _key(item, "p"),
            {
                "prompt": prompt,
                "chosen": assistant(texts[chosen]),
                "rejected": assistant(texts[rejected]),
                "item_id": item_id,
                "source": "preference",
                "margin": margin_of(consensus, chosen, rejected, trust_weighted=trust),
                "votes": consensus.votes,
                "agreement": consensus.agreement,
            },
            sorted([j.review.id for j in consensus.judgements]),
        )
    )
    return rows


def _completion_rows(
    item: SourceItem, recipe: Recipe, prompt: list[dict[str, str]], drops: Counter[str]
) -> list[Row]:
    """sft / openai-sft: the prompt and the best answer: an accepted correction, else the best response."""
    item_id = item.external_id or str(item.pk)
    corrections = _picked_corrections(item, recipe)
    if corrections:
        return [
            Row(
                _key(item, f"c/{r.id:012d}" if recipe.aggregation == "all_pairs" else "s"),
                {
                    "messages": [*prompt, *assistant(r.correction_text)],
                    "item_id": item_id,
                    "source": "correction",
                },
                [r.id],
            )
            for r in corrections
        ]
    best: SourceResponse
    review_ids = sorted(r.id for r in item.reviews)
    if len(item.responses) == 1:
        if len(item.reviews) < recipe.min_votes:
            drops["too_few_votes"] += 1
            return []
        best, source = item.responses[0], "response"
    else:
        consensus = consensus_of(item, trust_weighted=recipe.aggregation == "trust_weighted")
        if consensus is None:
            drops["no_preference"] += 1
            return []
        if consensus.tie_at_top:
            drops["tie"] += 1
            return []
        if not _passes_votes(consensus, recipe, drops):
            return []
        best = next(r for r in item.responses if r.id == consensus.order[0])
        source = "preference"
        review_ids = sorted(j.review.id for j in consensus.judgements)
    if recipe.min_rating is not None:
        rating = mean_rating(item, best.id)
        if rating is None or rating < recipe.min_rating:
            drops["below_min_rating"] += 1
            return []
    return [
        Row(
            _key(item, "s"),
            {
                "messages": [*prompt, *assistant(best.text)],
                "item_id": item_id,
                "source": source,
            },
            review_ids,
        )
    ]


def _ranking_rows(
    item: SourceItem,
    recipe: Recipe,
    prompt: list[dict[str, str]],
    drops: Counter[str],
    pseudonym: Callable[[str, object], str],
) -> list[Row]:
    """ranking: the completions best -> worst with a score each (wins minus losses per vote)."""
    if len(item.responses) < 2:
        drops["single_response"] += 1
        return []
    by_id = {r.id: r for r in item.responses}
    position = {r.id: (r.position, r.id) for r in item.responses}
    item_id = item.external_id or str(item.pk)
    consensus = consensus_of(item, trust_weighted=recipe.aggregation == "trust_weighted")
    if consensus is None:
        drops["no_preference"] += 1
        return []
    if consensus.all_tied:
        drops["tie"] += 1
        return []
    if not _passes_votes(consensus, recipe, drops):
        return []

    def row(key: str, order: list[int], scores: list[float], votes: int, ids: list[int]) -> Row:
        return Row(
            key,
            {
                "prompt": prompt,
                "completions": [by_id[rid].text for rid in order],
                "scores": scores,
                "models": [pseudonym("model", by_id[rid].model) for rid in order],
                "item_id": item_id,
                "votes": votes,
                "agreement": consensus.agreement,
            },
            ids,
        )

    if recipe.aggregation == "all_pairs":
        rows = []
        for review in item.reviews:
            j = judgement_of(review, item.responses)
            if j is None:
                continue
            net = {rid: j.net.get(rid, 0.0) for rid in by_id}
            order = sorted(net, key=lambda rid: (-net[rid], position[rid]))
            rows.append(
                row(
                    _key(item, f"r/{review.id:012d}"),
                    order,
                    [net[rid] for rid in order],
                    1,
                    [review.id],
                )
            )
        return rows
    scale = consensus.total_weight or 1.0
    return [
        row(
            _key(item, "r"),
            consensus.order,
            [round(consensus.net[rid] / scale, 4) for rid in consensus.order],
            consensus.votes,
            sorted(j.review.id for j in consensus.judgements),
        )
    ]


def _raw_rows(
    item: SourceItem,
    recipe: Recipe,
    prompt: list[dict[str, str]],
    drops: Counter[str],
    pseudonym: Callable[[str, object], str],
    campaign_slugs: dict[int, str],
) -> list[Row]:
    """raw: one row per included review with every field; experts and models pseudonymised."""
    if recipe.min_votes > 1 or recipe.min_agreement is not None:
        consensus = consensus_of(item, trust_weighted=recipe.aggregation == "trust_weighted")
        if consensus is None or not _passes_votes(consensus, recipe, drops):
            if consensus is None:
                drops["no_preference"] += 1
            return []
    responses = [
        {
            "response_id": r.id,
            "model": pseudonym("model", r.model),
            "text": r.text,
            "format": r.format,
            "position": r.position,
        }
        for r in item.responses
    ]
    context = json.dumps(item.context or {}, ensure_ascii=False, sort_keys=True)
    metadata = json.dumps(item.metadata or {}, ensure_ascii=False, sort_keys=True)
    rows = []
    for review in item.reviews:
        ratings = [
            {"response_id": int(rid), "criterion": criterion, "score": score}
            for rid, scores in sorted(review.ratings.items(), key=lambda kv: int(kv[0]))
            for criterion, score in sorted(scores.items())
        ]
        rows.append(
            Row(
                _key(item, f"{review.id:012d}"),
                {
                    "review_id": review.id,
                    "item_id": item.external_id or str(item.pk),
                    "campaign": campaign_slugs.get(review.campaign_id, str(review.campaign_id)),
                    "prompt": prompt,
                    "context": context,
                    "metadata": metadata,
                    "responses": responses,
                    "ratings": ratings,
                    "chosen": review.chosen_id,
                    "strength": review.strength,
                    "ranking": review.ranking,
                    "correction_response": review.correction_response_id,
                    "correction_text": review.correction_text,
                    "rationale": review.rationale,
                    "flags": review.flags,
                    "verdict": review.verdict,
                    "expert": pseudonym("expert", review.expert_id),
                    "created_at": review.created_at,
                    "active_seconds": review.active_seconds,
                },
                [review.id],
            )
        )
    return rows


def _openai(rows: list[Row], fmt: str) -> list[Row]:
    """OpenAI's fine-tuning lines carry only the fields its format names."""
    out = []
    for row in rows:
        d = row.data
        if fmt == "openai-sft":
            data: dict[str, Any] = {"messages": d["messages"]}
        else:
            data = {
                "input": {"messages": d["prompt"]},
                "preferred_output": d["chosen"],
                "non_preferred_output": d["rejected"],
            }
        out.append(Row(row.key, data, row.review_ids))
    return out


def item_rows(
    item: SourceItem,
    recipe: Recipe,
    *,
    drops: Counter[str],
    pseudonym: Callable[[str, object], str],
    campaign_slugs: dict[int, str],
) -> list[Row]:
    if _flagged(item, recipe):
        drops["flagged"] += 1
        return []
    prompt = prompt_messages(item)
    fmt = recipe.format
    if fmt.startswith("openai-") and any(m["role"] == "tool" for m in prompt):
        # OpenAI wants tool turns tied to the assistant's tool calls, which items do not carry.
        drops["tool_message_in_prompt"] += 1
        return []
    if fmt in {"dpo", "openai-dpo"}:
        rows = _preference_rows(item, recipe, prompt, drops)
    elif fmt in {"sft", "openai-sft"}:
        rows = _completion_rows(item, recipe, prompt, drops)
    elif fmt == "ranking":
        rows = _ranking_rows(item, recipe, prompt, drops, pseudonym)
    elif fmt == "raw":
        rows = _raw_rows(item, recipe, prompt, drops, pseudonym, campaign_slugs)
    else:
        raise BuildError(f"Unknown format {fmt!r}.")
    if fmt.startswith("openai-"):
        rows = _openai(rows, fmt)
    if len(rows) > 1:
        rows.sort(key=lambda r: r.key)
    return rows


# --- Arrow schemas ---------------------------------------------------------------

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

SCHEMAS: dict[str, pa.Schema] = {
    "dpo": pa.schema(
        [
            ("prompt", MESSAGES),
            ("chosen", MESSAGES),
            ("rejected", MESSAGES),
            ("item_id", pa.string()),
            ("source", pa.string()),
            ("margin", pa.float64()),
            ("votes", pa.int64()),
            ("agreement", pa.float64()),
        ]
    ),
    "sft": pa.schema([("messages", MESSAGES), ("item_id", pa.string()), ("source", pa.string())]),
    "openai-sft": pa.schema([("messages", MESSAGES)]),
    "openai-dpo": pa.schema(
        [
            ("input", pa.struct([("messages", MESSAGES)])),
            ("preferred_output", MESSAGES),
            ("non_preferred_output", MESSAGES),
        ]
    ),
    "ranking": pa.schema(
        [
            ("prompt", MESSAGES),
            ("completions", pa.list_(pa.string())),
            ("scores", pa.list_(pa.float64())),
            ("models", pa.list_(pa.string())),
            ("item_id", pa.string()),
            ("votes", pa.int64()),
            ("agreement", pa.float64()),
        ]
    ),
    "raw": pa.schema(
        [
            ("review_id", pa.int64()),
            ("item_id", pa.string()),
            ("campaign", pa.string()),
            ("prompt", MESSAGES),
            ("context", pa.string()),
            ("metadata", pa.string()),
            (
                "responses",
                pa.list_(
                    pa.struct(
                        [
                            ("response_id", pa.int64()),
                            ("model", pa.string()),
                            ("text", pa.string()),
                            ("format", pa.string()),
                            ("position", pa.int64()),
                        ]
                    )
                ),
            ),
            (
                "ratings",
                pa.list_(
                    pa.struct(
                        [
                            ("response_id", pa.int64()),
                            ("criterion", pa.string()),
                            ("score", pa.int64()),
                        ]
                    )
                ),
            ),
            ("chosen", pa.int64()),
            ("strength", pa.int64()),
            ("ranking", pa.list_(pa.int64())),
            ("correction_response", pa.int64()),
            ("correction_text", pa.string()),
            ("rationale", pa.string()),
            ("flags", pa.list_(pa.string())),
            ("verdict", pa.string()),
            ("expert", pa.string()),
            ("created_at", pa.string()),
            ("active_seconds", pa.int64()),
        ]
    ),
}


def _feature(dtype: pa.DataType) -> dict[str, Any]:
    """One Arrow type as the `dataset_info.features` YAML of a Hugging Face dataset card."""
    if pa.types.is_list(dtype):
        inner = _feature(dtype.value_type)
        return {"list": inner.get("dtype", inner.get("struct", inner))}
    if pa.types.is_struct(dtype):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in dtype]}
    names = {
        pa.string(): "string",
        pa.int64(): "int64",
        pa.float64(): "float64",
        pa.bool_(): "bool",
    }
    return {"dtype": names[dtype]}


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, **_feature(f.type)} for f in schema]
