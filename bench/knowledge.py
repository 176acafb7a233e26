"""Knowledge benchmark on a BEIR dataset (default: SciFact): ingest, retrieval latency, retrieval quality.

    LADDER_DATA_DIR=/tmp/bench-data .venv/bin/python -m bench.knowledge            # index from scratch
    LADDER_DATA_DIR=/tmp/bench-data .venv/bin/python -m bench.knowledge --keep     # reuse the index

Ingest goes through the real sync path (connector -> chunking -> embedding -> Postgres) and reports
docs/s, chunks/s and where the time goes. Latency is one client asking one question at a time:
embedding the query + the one hybrid SQL statement, k=10, as answers use it (no generation).
Writes bench/results/knowledge-<dataset>.json and prints tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
WARMUP = 5


async def latency(ctx: Any, data: Any, modes: tuple[str, ...] = ("hybrid", "dense", "fulltext")) -> dict[str, Any]:
    from knowledge.eval import audience, percentiles
    from knowledge.retrieve import embed_query, search
    from knowledge.sync import embedder_for

    emb, aud, out = embedder_for(ctx), audience(data.name), {}
    queries = list(data.queries.values())
    for mode in modes:
        embed_ms, sql_ms, total_ms = [], [], []
        for i, query in enumerate(queries[:WARMUP] + queries):
            t0 = time.perf_counter()
            vector = None if mode == "fulltext" else await embed_query(emb, query)
            t1 = time.perf_counter()
            async with ctx.db() as session:
                await search(session, query, aud, k=10, mode=mode, query_vector=vector)
            t2 = time.perf_counter()
            if i >= WARMUP:
                embed_ms.append((t1 - t0) * 1000)
                sql_ms.append((t2 - t1) * 1000)
                total_ms.append((t2 - t0) * 1000)
        out[mode] = {"total": percentiles(total_ms), "embed": percentiles(embed_ms), "sql": percentiles(sql_ms)}
    return out


def ingest_summary(report: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Throughput of this run's sync, or of the run that built the reused index."""
    if not report.get("chunks_embedded") and previous:
        return {**previous, "reused": True}
    seconds = report.get("seconds") or 1e-9
    docs = report.get("added", 0) + report.get("updated", 0)
    return {"documents": docs, "chunks": report.get("chunks_written", 0),
            "chunks_embedded": report.get("chunks_embedded", 0), "seconds": round(seconds, 1),
            "docs_per_s": round(docs / seconds, 2), "chunks_per_s": round(report.get("chunks_written", 0) / seconds, 2),
            "where_s": {k: round(v, 1) for k, v in (report.get("timings") or {}).items()}, "reused": False}


async def run(dataset: Path, keep: bool, limit: int | None) -> dict[str, Any]:
    from bot.app import build_context, close
    from bot.config import get_settings
    from knowledge.eval import drop_index, ensure_indexed, load_dataset, run_modes, source_name

    ctx = await build_context(get_settings())
    try:
        data = load_dataset(dataset, limit=limit)
        out_file = RESULTS / f"knowledge-{data.name}.json"
        previous = json.loads(out_file.read_text()).get("ingest") if out_file.exists() else None
        if not keep:
            try:
                await drop_index(ctx, data)
            except Exception:
                pass  # nothing indexed yet
        print(f"indexing {data.name} as source {source_name(data.name)} …", flush=True)
        report = await ensure_indexed(ctx, data)
        ingest = ingest_summary(report, previous)
        lat = await latency(ctx, data)
        quality = await run_modes(ctx, data)
        from knowledge.rerank import reranker_status

        result = {"dataset": data.name, "queries": len(data.queries), "ingest": ingest, "latency_ms": lat,
                  "rows": quality.rows, "reranker": reranker_status(ctx.settings),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(result, indent=2) + "\n")
        print_tables(result)
        print(f"\nwritten to {out_file}")
        return result
    finally:
        await close(ctx)


def print_tables(r: dict[str, Any]) -> None:
    from knowledge.eval import table

    ing = r["ingest"]
    print(f"\n{r['dataset']}: {r['queries']} queries")
    print(f"ingest{' (reused index; numbers from the run that built it)' if ing.get('reused') else ''}: "
          f"{ing.get('documents')} docs, {ing.get('chunks')} chunks in {ing.get('seconds')} s = "
          f"{ing.get('docs_per_s')} docs/s, {ing.get('chunks_per_s')} chunks/s; "
          f"where: {', '.join(f'{k} {v} s' for k, v in (ing.get('where_s') or {}).items())}")
    print(f"\n{'latency (ms)':<12}{'p50':>8}{'p95':>8}{'embed p50':>11}{'sql p50':>9}{'sql p95':>9}")
    for mode, v in r["latency_ms"].items():
        print(f"{mode:<12}{v['total']['p50']:>8}{v['total']['p95']:>8}{v['embed']['p50']:>11}"
              f"{v['sql']['p50']:>9}{v['sql']['p95']:>9}")
    print()
    print(table(r["rows"]))
    print(r["reranker"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--keep", action="store_true", help="reuse an indexed copy of the dataset")
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    args = parser.parse_args()
    asyncio.run(run(args.dataset, args.keep, args.limit))


if __name__ == "__main__":
    main()
