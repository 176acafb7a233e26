"""Retrieval quality on a BEIR dataset: nDCG@10, Recall@10, Recall@100, MRR@10 for each mode.

    ladder eval retrieval --dataset ../shared/datasets/scifact --keep
    ladder eval retrieval --dataset DIR --json     # {"rows": [{"mode": "hybrid", "ndcg@10": 0.71, ...}, ...]}

The corpus is indexed through the normal sync path as a source named `eval-<dataset>`, readable only by
`user:eval:<dataset>`, so it never appears in the team's answers. `--keep` leaves it there, and a later
run reuses it (nothing is re-embedded); without it the copy is removed afterwards.
Chunk hits become a document ranking by each document's best chunk.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import UserError
from knowledge.acl import Audience

MODES = ("dense", "fulltext", "hybrid", "hybrid+rerank")
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DEPTH_DOCS = 100
DEPTH_CHUNKS = 300


@dataclass
class Dataset:
    name: str
    path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_dataset(path: Path, split: str = "test", limit: int | None = None) -> Dataset:
    """Queries that have judgements in `qrels/<split>.tsv` (first `limit` of them, in file order)."""
    corpus, queries_file, qrels_file = path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"
    for f in (corpus, queries_file, qrels_file):
        if not f.is_file():
            raise UserError(f"{path} is not a BEIR dataset: {f.relative_to(path)} is missing "
                            "(need corpus.jsonl, queries.jsonl, qrels/test.tsv).")
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t")
        if n == 0 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) >= 3:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    for line in queries_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    ids = [q for q in qrels if q in queries][: limit or None]
    return Dataset(path.name, path, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids})


def ndcg(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0), 0.0)


def score_run(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean metrics over the judged queries (a query with no results scores 0)."""
    n = len(qrels) or 1
    sums = dict.fromkeys(METRICS, 0.0)
    for q, rels in qrels.items():
        ranked = run.get(q, [])
        sums["ndcg@10"] += ndcg(ranked, rels)
        sums["recall@10"] += recall(ranked, rels, 10)
        sums["recall@100"] += recall(ranked, rels, 100)
        sums["mrr@10"] += mrr(ranked, rels)
    return {m: round(v / n, 4) for m, v in sums.items()}


def documents(external_ids: Iterable[str]) -> list[str]:
    """Chunk hits (best first) -> documents, each at the rank of its best chunk."""
    return list(dict.fromkeys(external_ids))


@dataclass
class EvalResult:
    dataset: str
    queries: int
    rows: list[dict[str, Any]]
    ingest: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "queries": self.queries, "rows": self.rows, "ingest": self.ingest,
                "latency_ms": self.latency_ms}


def source_name(dataset: str) -> str:
    return "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "-", dataset)[:58]


def audience(dataset: str) -> Audience:
    return Audience((f"user:eval:{dataset}",))


async def ensure_indexed(ctx: Any, data: Dataset, *, progress: Callable[[Any], Awaitable[None]] | None = None,
                         corpus_limit: int | None = None) -> dict[str, Any]:
    """Index the corpus as source `eval-<name>` (reusing what is there); returns the sync report."""
    from knowledge import admin
    from knowledge.sync import embedder_for, load_source, sync_source

    name = source_name(data.name)
    try:
        async with ctx.db() as session:
            await load_source(session, name)
    except UserError:
        config = {"path": str(data.path.resolve()), "acl": audience(data.name).principals[0]}
        if corpus_limit:
            config["limit"] = str(corpus_limit)
        await admin.add_source(ctx, name, kind="beir", config=config)
    report = await sync_source(ctx.db, name, embedder=embedder_for(ctx), progress=progress, wait=True)
    return report.as_dict()


async def drop_index(ctx: Any, data: Dataset) -> None:
    from knowledge import admin

    await admin.remove_source(ctx, source_name(data.name))


async def run_modes(ctx: Any, data: Dataset, modes: Iterable[str] = MODES) -> EvalResult:
    """Search every query in every mode; latency is embedding + SQL, per query, single client."""
    from knowledge.rerank import get_reranker
    from knowledge.retrieve import Tuning, search
    from knowledge.sync import embedder_for

    emb, reranker, aud = embedder_for(ctx), get_reranker(ctx), audience(data.name)
    tune = Tuning(k_dense=DEPTH_CHUNKS, k_text=DEPTH_CHUNKS)
    vectors = dict(zip(data.queries, await emb.aencode(list(data.queries.values())), strict=True))
    rows, latency = [], {}
    for mode in modes:
        if mode == "hybrid+rerank" and reranker is None:
            rows.append({"mode": mode, **dict.fromkeys(METRICS), "note": "off (no reranker model files)"})
            continue
        run, took = {}, []
        base = "hybrid" if mode == "hybrid+rerank" else mode
        for qid, query in data.queries.items():
            started = time.perf_counter()
            async with ctx.db() as session:
                hits = await search(session, query, aud, k=DEPTH_CHUNKS, mode=base, tuning=tune,
                                    query_vector=None if base == "fulltext" else vectors[qid],
                                    reranker=reranker if mode == "hybrid+rerank" else None)
            took.append((time.perf_counter() - started) * 1000)
            run[qid] = documents(h.external_id for h in hits)[:DEPTH_DOCS]
        rows.append({"mode": mode, **score_run(run, data.qrels)})
        latency[mode] = percentiles(took)
    return EvalResult(data.name, len(data.queries), rows, latency_ms=latency)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda p: ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]  # noqa: E731
    return {"p50": round(pick(50), 2), "p95": round(pick(95), 2), "mean": round(sum(values) / len(values), 2)}


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one row per mode; metrics that were not run show the note instead."""
    header = f"{'mode':<15}" + "".join(f"{m:>12}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.get(METRICS[0]) is None:
            lines.append(f"{row['mode']:<15}  {row.get('note', 'off')}")
        else:
            lines.append(f"{row['mode']:<15}" + "".join(f"{row[m]:>12.4f}" for m in METRICS))
    return "\n".join(lines)


async def evaluate(ctx: Any, path: Path, *, keep: bool = False, limit: int | None = None,
                   modes: Iterable[str] = MODES, progress: Callable[[Any], Awaitable[None]] | None = None,
                   corpus_limit: int | None = None) -> EvalResult:
    """Index (or reuse), search, score; removes the index afterwards unless `keep`."""
    data = load_dataset(path, limit=limit)
    ingest = await ensure_indexed(ctx, data, progress=progress, corpus_limit=corpus_limit)
    try:
        result = await run_modes(ctx, data, modes)
    finally:
        if not keep:
            await drop_index(ctx, data)
    result.ingest = ingest
    return result
