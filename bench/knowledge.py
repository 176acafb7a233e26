"""Knowledge benchmark on a BEIR dataset (default: SciFact): ingest, retrieval latency, retrieval quality.

    LADDER_DATA_DIR=/tmp/bench-data .venv/bin/python -m bench.knowledge            # index from scratch
    LADDER_DATA_DIR=/tmp/bench-data .venv/bin/python -m bench.knowledge --keep     # reuse the index

Ingest goes through the real sync path (connector -> chunking -> embedding -> Postgres) and reports
docs/s, chunks/s and where the time goes. Latency is one client asking one question at a time:
embedding the query + the one hybrid SQL statement, k=10, as answers use it (no generation).
Baselines in the same run (bench/baselines.py): bm25s and exact numpy dense search for quality and
latency, raw sentence-transformers encode for ingest; ratios against them. Load averages are recorded.
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


async def run(dataset: Path, keep: bool, limit: int | None, sample: int = 2000,
              thread_sample: int = 500) -> dict[str, Any]:
    from bench import baselines
    from bot.app import build_context, close
    from bot.config import get_settings
    from knowledge.eval import drop_index, ensure_indexed, load_dataset, run_modes, source_name

    load = {"start": baselines.load()}
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
        load["after_ingest"] = baselines.load()
        lat = await latency(ctx, data)
        quality = await run_modes(ctx, data)
        load["after_quality"] = baselines.load()
        index = await baselines.stored_index(ctx, source_name(data.name))
        base_lat = await baselines.latency(ctx, data, index)
        lat_ratio = {m: {"total_p50": round(v["total"]["p50"] / base_lat["numpy exact dense"]["total"]["p50"], 2),
                         "search_p50": round(v["sql"]["p50"] / base_lat["numpy exact dense"]["sql"]["p50"], 2)}
                     for m, v in lat.items()}
        baseline = {"quality": await baselines.quality(ctx, data, index, quality.rows),
                    "latency_ms": base_lat, "latency_over_numpy_exact": lat_ratio,
                    "ingest": baselines.ingest(ctx, data, index, ingest, sample, thread_sample)}
        load["end"] = baselines.load()
        from knowledge.rerank import reranker_status

        result = {"dataset": data.name, "queries": len(data.queries), "ingest": ingest, "latency_ms": lat,
                  "rows": quality.rows, "baselines": baseline, "reranker": reranker_status(ctx.settings),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_1_5_15": load},
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
    b = r.get("baselines")
    if b:
        for mode, v in b["latency_ms"].items():
            print(f"{mode[:12]:<12}{v['total']['p50']:>8}{v['total']['p95']:>8}{v['embed']['p50']:>11}"
                  f"{v['sql']['p50']:>9}{v['sql']['p95']:>9}")
        print("latency / numpy exact dense (p50 total, p50 search): "
              + ", ".join(f"{m} {v['total_p50']}x, {v['search_p50']}x"
                          for m, v in b["latency_over_numpy_exact"].items()))
    print()
    print(table(r["rows"] + (b["quality"]["rows"] if b else [])))
    if b:
        q, ing = b["quality"], b["ingest"]
        print(f"hybrid / best baseline: {q['hybrid_over_best']}  (bm25s stemmer: {q['bm25']['stemmer']})")
        raw = ing["raw_encode"]
        print(f"raw model.encode: {raw['chunks_per_s']} chunks/s on {raw['chunks']} chunks ({raw['threads']} threads); "
              f"Ladder ingest / raw = {ing.get('ladder_over_raw')}; raw model share of ingest time "
              f"= {ing.get('raw_model_share_of_ingest')}")
        print("batch encode by threads: " + ", ".join(f"{t['threads']}: {t['chunks_per_s']} chunks/s"
                                                     for t in ing["batch_encode_by_threads"]))
        print("single query by threads: " + ", ".join(f"{t['threads']}: p50 {t['p50']} ms, p95 {t['p95']} ms"
                                                     for t in ing["single_query_by_threads"]))
        print(f"load average (1, 5, 15 min): {r['machine'].get('loadavg_1_5_15')}")
    print(r["reranker"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--keep", action="store_true", help="reuse an indexed copy of the dataset")
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    parser.add_argument("--sample", type=int, default=2000, help="chunks for the raw model.encode baseline")
    parser.add_argument("--thread-sample", type=int, default=500, help="chunks per torch thread count (1, 2)")
    args = parser.parse_args()
    asyncio.run(run(args.dataset, args.keep, args.limit, args.sample, args.thread_sample))


if __name__ == "__main__":
    main()
