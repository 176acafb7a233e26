"""Prompt building (pure): system prompt, persona, templates, few-shot examples.

    >>> build_system(persona="You are a terse SRE.", template="cot").splitlines()[0]
    'You are Ladder, a helpful assistant in a team chat.'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.llm.base import ChatMessage

BASE_SYSTEM = (
    "You are Ladder, a helpful assistant in a team chat. Answer clearly and concisely. "
    "If you do not know, say so."
)
TEMPLATES = ("cot", "json", "few-shot")
COT_INSTRUCTION = (
    "Think through the problem step by step, writing out each step of your reasoning. "
    "Then give the final result on its own last line, starting with 'Answer:'."
)
DEFAULT_JSON_SCHEMA: dict[str, Any] = {"type": "object"}


def build_system(persona: str | None = None, template: str | None = None,
                 json_schema: dict[str, Any] | None = None) -> str:
    parts = [BASE_SYSTEM.split(". ")[0] + ".", BASE_SYSTEM.split(". ", 1)[1]]
    if persona:
        parts.append(f"Your persona in this channel: {persona}")
    if template == "cot":
        parts.append(COT_INSTRUCTION)
    if template == "json":
        schema = json.dumps(json_schema or DEFAULT_JSON_SCHEMA)
        parts.append(f"Reply with only one JSON value that matches this JSON schema, no prose: {schema}")
    return "\n".join(parts)


def few_shot_messages(examples: Sequence[dict[str, str]]) -> list[ChatMessage]:
    """Saved examples become prior user/assistant turns: the model imitates their form."""
    out: list[ChatMessage] = []
    for ex in examples:
        out += [ChatMessage("user", ex["input"]), ChatMessage("assistant", ex["output"])]
    return out


def fill(template_text: str, text: str) -> str:
    """A saved prompt with `{input}` gets the text there; without it, the text is appended."""
    if "{input}" in template_text:
        return template_text.replace("{input}", text)
    return f"{template_text}\n\n{text}".strip()


def json_retry_message(error: str) -> ChatMessage:
    return ChatMessage("user", f"That reply was not valid: {error}. Reply again with only valid JSON "
                               "that matches the schema, nothing else.")


def parse_json_reply(text: str) -> Any:
    """The JSON value in a reply, tolerating a ```json fence around it."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return json.loads(body)
