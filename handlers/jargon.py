"""Jargon helpers: `/explain TERM`, `/tokenize TEXT`, `/similar A | B`.

    /explain quantization
    /tokenize Ladder tokenizes this sentence.
    /similar The deploy failed | The release broke
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path

from bot import channels
from bot.commands import nearest
from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply
from bot.router import command

GLOSSARY = Path(__file__).resolve().parent.parent / "docs" / "glossary.md"
ALIASES = {"lora/qlora": "lora", "agents": "agentic ai", "agent": "agentic ai", "tokens": "tokenization",
           "embedding": "embeddings", "context": "context window", "params": "parameters",
           "retrieval augmented generation": "rag", "fine tuning": "fine-tuning", "finetuning": "fine-tuning",
           "model context protocol": "mcp", "quantisation": "quantization", "tokenisation": "tokenization"}
MAX_TOKENS_SHOWN = 200


@functools.cache
def glossary() -> dict[str, tuple[str, str]]:
    """lower-case term -> (term, explanation), parsed from docs/glossary.md."""
    entries: dict[str, tuple[str, str]] = {}
    for block in re.split(r"^## ", GLOSSARY.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        entries[title.strip().lower()] = (title.strip(), " ".join(body.split()))
    return entries


@command("explain", help="Explain an AI term in plain words", usage="/explain TERM", free_text=True)
async def explain(msg: Incoming, ctx: Context) -> Reply:
    term = msg.body.strip().lower().strip("?")
    entries = glossary()
    key = ALIASES.get(term, term)
    if key not in entries:
        hint = nearest(key, list(entries) + list(ALIASES))
        known = ", ".join(title for title, _ in entries.values())
        suggestion = f" Did you mean '{ALIASES.get(hint, hint)}'?" if hint else ""
        raise UserError(f"I have no entry for '{term}'.{suggestion} I can explain: {known}.")
    title, text = entries[key]
    return Reply(text=f"*{title}*: {text}")


@command("tokenize", help="Show how the current model splits text into tokens", usage="/tokenize TEXT",
         free_text=True)
async def tokenize(msg: Incoming, ctx: Context) -> Reply:
    text = msg.body
    if not text.strip():
        raise UserError("Give me some text: /tokenize TEXT")
    model = await channels.chat_model(ctx.models, await channels.load(ctx.db, msg))
    pairs = await model.tokenize(text)
    note = ""
    if pairs is None:  # a served model without a tokenizer endpoint: use the embedded one, and say so
        local = ctx.models.backend("local")
        fallback = local.model(local.default_model)
        pairs = await fallback.tokenize(text)
        note = f" (tokenizer of {fallback.name}; {model.name} on {model.backend} does not expose its own)"
    assert pairs is not None
    shown = " ".join(f"`{tok}`={tid}" for tok, tid in pairs[:MAX_TOKENS_SHOWN])
    more = f" … and {len(pairs) - MAX_TOKENS_SHOWN} more" if len(pairs) > MAX_TOKENS_SHOWN else ""
    return Reply(text=f"{len(pairs)} tokens for {len(text)} characters{note}:\n{shown}{more}")


@command("similar", help="Cosine similarity of two texts' embeddings", usage="/similar TEXT A | TEXT B",
         free_text=True)
async def similar(msg: Incoming, ctx: Context) -> Reply:
    a, sep, b = msg.body.partition("|")
    if not sep or not a.strip() or not b.strip():
        raise UserError("Separate the two texts with |, e.g. /similar the deploy failed | the release broke")
    from knowledge.embedding import Embedder

    embedder = ctx.service("embedder", lambda: Embedder.default(ctx.settings.embedding_model))
    va, vb = await asyncio.to_thread(embedder.encode, [a.strip(), b.strip()])
    score = float(va @ vb)
    verdict = "very similar" if score > 0.8 else "related" if score > 0.5 else "somewhat related" \
        if score > 0.3 else "unrelated"
    return Reply(text=f"Cosine similarity: {score:.3f} ({verdict}). Model: {Path(embedder.model_name).name}")
