"""The dataset card (README.md): a YAML header `datasets.load_dataset` reads, then prose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import yaml

from datasets_app.formats import features_yaml

if TYPE_CHECKING:
    from datasets_app.builder import BuildInput

TAGS = {
    "dpo": ["dpo", "preference", "human-feedback"],
    "openai-dpo": ["dpo", "preference", "openai", "human-feedback"],
    "sft": ["sft", "human-feedback"],
    "openai-sft": ["sft", "openai", "human-feedback"],
    "ranking": ["ranking", "reward-modeling", "human-feedback"],
    "raw": ["human-feedback", "annotations"],
}

ROW_DESCRIPTION = {
    "dpo": (
        "`prompt`, `chosen` and `rejected` are chat message lists (TRL's conversational "
        "preference format); `source` says whether the pair comes from expert preferences "
        "(`preference`) or an accepted correction preferred over the original (`correction`); "
        "`margin` is the mean strength (1-3) with which the reviews prefer `chosen`, "
        "`votes` how many reviews judged the item and `agreement` the share of them whose "
        "best response is the chosen one."
    ),
    "sft": (
        "`messages` is the prompt followed by the assistant turn to learn: an accepted "
        "expert correction (`source: correction`), else the response the experts preferred "
        "(`preference`), else the one reviewed response (`response`)."
    ),
    "openai-sft": 'Each line is `{"messages": [...]}` as OpenAI supervised fine-tuning reads it.',
    "openai-dpo": (
        'Each line is `{"input": {"messages": [...]}, "preferred_output": [...], '
        '"non_preferred_output": [...]}` as OpenAI preference fine-tuning reads it.'
    ),
    "ranking": (
        "`completions` are the responses best first, `scores` their wins minus losses per "
        "vote, `models` the pseudonymised model of each completion."
    ),
    "raw": (
        "One row per included review with every field; `context` and `metadata` are JSON "
        "text, experts and models are pseudonymised."
    ),
}

USAGE = {
    "dpo": (
        "from trl import DPOConfig, DPOTrainer\n"
        "trainer = DPOTrainer(model=model, args=DPOConfig(output_dir='out'),\n"
        "                     train_dataset=ds['train'], processing_class=tokenizer)"
    ),
    "sft": (
        "from trl import SFTConfig, SFTTrainer\n"
        "trainer = SFTTrainer(model=model, args=SFTConfig(output_dir='out'),\n"
        "                     train_dataset=ds['train'])"
    ),
}

EXCLUDED_REASONS = {
    "superseded": "replaced by a lead's later review",
    "rejected": "rejected (by gold or a lead)",
    "not_accepted": "not accepted yet",
    "gold": "on gold (test) items",
    "before_date_from": "older than `date_from`",
    "after_date_to": "newer than `date_to`",
    "low_trust": "by an expert below `min_trust`",
}

DROP_RULES = {
    "flagged": "a review flagged the item",
    "tie": "the experts' votes tied",
    "low_agreement": "agreement below `min_agreement`",
    "too_few_votes": "fewer reviews than `min_votes`",
    "no_preference": "the reviews state no order of the responses",
    "single_response": "one response and no correction: nothing to compare",
    "correction_unchanged": "the correction equals the original",
    "below_min_rating": "the answer's mean rating is below `min_rating`",
    "tool_message_in_prompt": "the prompt has tool turns OpenAI's format cannot carry",
}


def _parquet_paths(data_files: list[dict[str, Any]], split: str) -> str | list[str]:
    """The split's Parquet file, or its shards (one per process of a parallel build)."""
    paths = [
        f["path"] for f in data_files if f.get("split") == split and f["path"].endswith(".parquet")
    ]
    return paths[0] if len(paths) == 1 else paths


def _yaml_header(
    spec: BuildInput,
    schema: pa.Schema,
    splits: list[str],
    counts: dict[str, Any],
    data_files: list[dict[str, Any]],
) -> str:
    recipe = spec.recipe
    header: dict[str, Any] = {
        "pretty_name": spec.dataset_name,
        "tags": TAGS[recipe.format],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": split, "path": _parquet_paths(data_files, split)} for split in splits
                ],
            }
        ],
        "dataset_info": {
            "features": features_yaml(schema),
            "splits": [
                {
                    "name": split,
                    "num_bytes": counts["num_bytes"][split],
                    "num_examples": counts["rows"][split],
                }
                for split in splits
            ],
        },
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


def card_text(
    *,
    spec: BuildInput,
    schema: pa.Schema,
    splits: list[str],
    counts: dict[str, Any],
    data_files: list[dict[str, Any]],
    content_hash: str,
    builder: str,
) -> str:
    """The card. It holds no timestamp, so the same build gives the same card."""
    recipe = spec.recipe
    lines = [
        "---",
        _yaml_header(spec, schema, splits, counts, data_files).rstrip(),
        "---",
        "",
        f"# {spec.dataset_name} — version {spec.version}",
        "",
    ]
    if spec.description.strip():
        lines += [spec.description.strip(), ""]
    lines += [
        f"Format **`{recipe.format}`**. {ROW_DESCRIPTION[recipe.format]}",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/this/folder")  # or the hub repository it was uploaded to',
    ]
    if recipe.format in USAGE:
        lines.append(USAGE[recipe.format])
    lines += [
        "```",
        "",
        "The same rows are in `data/<split>.jsonl` for tools that read JSON lines.",
        "",
        "## Rows",
        "",
        "| split | rows |",
        "|---|---|",
        *[f"| {split} | {counts['rows'][split]} |" for split in splits],
        "",
        f"Splits are decided by a hash of each item's prompt and context with seed {recipe.seed} "
        f"(test fraction {recipe.test_fraction}): no item is in two splits.",
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        f"| campaigns | {', '.join(spec.campaign_slugs.get(c, str(c)) for c in recipe.campaigns)} |",
        f"| aggregation | `{recipe.aggregation}` |",
    ]
    for key, value in recipe.filters.items():
        lines.append(f"| {key} | `{value if value is not None else '-'}` |")
    reviews = counts["reviews"]
    lines += [
        "",
        "## What was left out, and why",
        "",
        f"{reviews['considered']} reviews in the campaigns; {reviews['included']} included "
        f"from {counts['items']} items.",
        "",
    ]
    if reviews["excluded"]:
        lines += ["| reviews left out | count |", "|---|---|"]
        lines += [
            f"| {EXCLUDED_REASONS.get(reason, reason)} | {n} |"
            for reason, n in reviews["excluded"].items()
        ]
        lines.append("")
    unit = "pairs" if recipe.aggregation == "all_pairs" and "dpo" in recipe.format else "items"
    if counts["dropped"]:
        lines += [f"| {unit} dropped by rule | count |", "|---|---|"]
        lines += [
            f"| `{rule}`: {DROP_RULES.get(rule, rule)} | {n} |"
            for rule, n in counts["dropped"].items()
        ]
    else:
        lines.append(f"No {unit} were dropped by a rule.")
    lines += [
        "",
        "## Provenance",
        "",
        f"- Content hash `{content_hash}` (sha256 over the JSONL files; the same recipe over "
        "the same reviews gives the same hash).",
        f"- Built by `{builder}`. `manifest.json` lists every file with its sha256.",
        "- `lineage.jsonl` maps each row (by key) to the ids of the reviews it came from.",
        "- Model names and experts are pseudonymised with a key kept by the platform, stable "
        "within this dataset.",
        "",
        "| file | rows | bytes | sha256 |",
        "|---|---|---|---|",
        *[f"| `{f['path']}` | {f['rows']} | {f['size']} | `{f['sha256']}` |" for f in data_files],
        "",
    ]
    return "\n".join(lines)
