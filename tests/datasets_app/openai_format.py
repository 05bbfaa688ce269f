"""A checker for OpenAI fine-tuning JSONL, written from OpenAI's published format rules.

Supervised (chat) lines: an object with a non-empty `messages` list (optionally `tools`,
`parallel_tool_calls`); each message an object with a known `role` and string `content`,
no other keys than OpenAI names; `weight` (0 or 1) only on assistant turns; at least one
assistant message. Preference (DPO) lines: `input` holding `messages` as above (ending on a
turn the model answers, so not on an assistant turn), and `preferred_output` and
`non_preferred_output`, each a list of exactly one assistant message. A training file needs
at least 10 examples.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = {"system", "developer", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
MIN_EXAMPLES = 10


def _message_errors(message: Any, where: str) -> list[str]:
    if not isinstance(message, dict):
        return [f"{where}: not an object"]
    errors = []
    if "role" not in message or "content" not in message:
        errors.append(f"{where}: missing role or content")
    unknown = set(message) - MESSAGE_KEYS
    if unknown:
        errors.append(f"{where}: unrecognised keys {sorted(unknown)}")
    if message.get("role") not in ROLES:
        errors.append(f"{where}: unrecognised role {message.get('role')!r}")
    content = message.get("content")
    if not isinstance(content, str) or not content:
        errors.append(f"{where}: content must be a non-empty string")
    if "weight" in message and (
        message.get("role") != "assistant" or message["weight"] not in (0, 1)
    ):
        errors.append(f"{where}: weight is 0 or 1 and only on assistant messages")
    return errors


def _messages_errors(messages: Any, where: str) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return [f"{where}: messages must be a non-empty list"]
    errors = []
    for index, message in enumerate(messages):
        errors += _message_errors(message, f"{where}[{index}]")
    return errors


def sft_line_errors(line: dict[str, Any]) -> list[str]:
    if not isinstance(line, dict):
        return ["line: not an object"]
    errors = []
    unknown = set(line) - {"messages", "tools", "parallel_tool_calls"}
    if unknown:
        errors.append(f"line: unrecognised keys {sorted(unknown)}")
    message_errors = _messages_errors(line.get("messages"), "messages")
    errors += message_errors
    if not message_errors and not any(m["role"] == "assistant" for m in line["messages"]):
        errors.append("messages: no assistant message")
    return errors


def dpo_line_errors(line: dict[str, Any]) -> list[str]:
    if not isinstance(line, dict):
        return ["line: not an object"]
    errors = []
    if set(line) != {"input", "preferred_output", "non_preferred_output"}:
        errors.append(
            f"line: keys must be input, preferred_output, non_preferred_output: {sorted(line)}"
        )
        return errors
    source = line["input"]
    if not isinstance(source, dict) or set(source) - {"messages", "tools", "parallel_tool_calls"}:
        return ["input: must be an object with messages"]
    errors += _messages_errors(source.get("messages"), "input.messages")
    if not errors and source["messages"][-1]["role"] == "assistant":
        errors.append("input.messages: must not end on an assistant turn")
    for key in ("preferred_output", "non_preferred_output"):
        output = line[key]
        if not isinstance(output, list) or len(output) != 1:
            errors.append(f"{key}: exactly one message")
            continue
        errors += _message_errors(output[0], f"{key}[0]")
        if output[0].get("role") != "assistant":
            errors.append(f"{key}[0]: must be an assistant message")
    return errors


def file_errors(text: str, *, kind: str, min_examples: int = MIN_EXAMPLES) -> list[str]:
    """Every problem of a JSONL training file, each prefixed with its line number."""
    check = sft_line_errors if kind == "sft" else dpo_line_errors
    errors = []
    lines = [line for line in text.splitlines() if line.strip()]
    for number, raw in enumerate(lines, start=1):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc})")
            continue
        errors += [f"line {number}: {e}" for e in check(parsed)]
    if len(lines) < min_examples:
        errors.append(f"file: {len(lines)} examples; OpenAI needs at least {min_examples}")
    return errors
