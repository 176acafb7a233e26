"""The knowledge base's public face: what handlers and other folders may call.

    from knowledge import Audience, audience_for, search, answer_question, sync_source
    audience = await audience_for(ctx, msg, private_reply=msg.is_dm)
    async with ctx.db() as session:
        hits = await search(session, "vpn reset", audience, embedder=embedder)

Names resolve lazily, so importing the package stays cheap and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Audience": "knowledge.acl", "audience_for": "knowledge.acl", "set_members": "knowledge.acl",
    "membership_failed": "knowledge.acl",
    "Hit": "knowledge.retrieve", "search": "knowledge.retrieve", "reranker_status": "knowledge.retrieve",
    "Answer": "knowledge.answer", "answer_question": "knowledge.answer", "NOT_FOUND": "knowledge.answer",
    "rag_audience": "knowledge.rag", "rag_reply": "knowledge.rag",
    "sync_source": "knowledge.sync", "sync_all": "knowledge.sync", "embedder_for": "knowledge.sync",
}
__all__ = sorted(_EXPORTS) + ["answer", "sync"]


def __getattr__(name: str) -> Any:
    if name == "answer":  # the contract's names: knowledge.answer_question / knowledge.sync_source
        return importlib.import_module("knowledge.answer")
    if name == "sync":
        return importlib.import_module("knowledge.sync")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
