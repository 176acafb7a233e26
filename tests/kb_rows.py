"""Test helpers: put sources, documents and chunks straight into the knowledge tables (no sync needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.retrieve import vector_literal


async def add_source(session: AsyncSession, name: str, kind: str = "folder") -> int:
    return (await session.execute(text(
        "INSERT INTO sources (name, kind) VALUES (:n, :k) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind "
        "RETURNING id"), {"n": name, "k": kind})).scalar_one()


async def add_document(session: AsyncSession, source_id: int, external_id: str, title: str,
                       chunks: Sequence[str], vectors: np.ndarray, acl: Sequence[str],
                       url: str | None = None) -> int:
    """One document with its chunks (heading = title), vectors given per chunk."""
    doc_id = (await session.execute(text(
        "INSERT INTO documents (source_id, external_id, title, url, content_hash, acl) "
        "VALUES (:s, :e, :t, :u, :h, :a) RETURNING id"),
        {"s": source_id, "e": external_id, "t": title, "u": url, "a": list(acl),
         "h": hashlib.sha256("".join(chunks).encode()).hexdigest()})).scalar_one()
    await session.execute(text(
        "INSERT INTO chunks (document_id, ord, heading, text, content_hash, tokens, embedding, acl) "
        "VALUES (:d, :o, :t, :x, :h, :n, CAST(:v AS vector), :a)"),
        [{"d": doc_id, "o": i, "t": title, "x": body, "h": hashlib.sha256(body.encode()).hexdigest(),
          "n": len(body.split()), "v": vector_literal(vectors[i]), "a": list(acl)} for i, body in enumerate(chunks)])
    return doc_id


def unit_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
