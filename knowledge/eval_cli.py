"""`ladder eval retrieval --dataset DIR [--json] [--keep] [--limit N]`: retrieval metrics per mode.

    ladder eval retrieval --dataset ../shared/datasets/scifact --keep
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def retrieval(dataset: Path = typer.Option(..., "--dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, "
                                           "qrels/test.tsv"),
              as_json: bool = typer.Option(False, "--json", help="Print {\"rows\": [...]} as JSON."),
              keep: bool = typer.Option(False, "--keep", help="Keep the indexed copy; reuse it next time."),
              limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N queries."),
              corpus_limit: int | None = typer.Option(None, "--corpus-limit", min=1,
                                                      help="Index only the first N corpus documents.")) -> None:
    """nDCG@10, Recall@10, Recall@100, MRR@10 for dense, fulltext, hybrid and hybrid+rerank."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from knowledge.cli import _run
    from knowledge.eval import evaluate, table

    async def body(ctx: Any) -> Any:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True,
                      disable=as_json) as bar:
            task = bar.add_task(f"indexing {dataset.name}", total=None)

            async def on_progress(p: Any) -> None:
                bar.update(task, description=f"indexing {dataset.name}: {p.seen} documents read, "
                                             f"{p.chunks_embedded} chunks embedded")

            return await evaluate(ctx, dataset, keep=keep, limit=limit, progress=on_progress,
                                  corpus_limit=corpus_limit)

    result = _run(body)
    if as_json:
        typer.echo(json.dumps({"rows": result.rows, "dataset": result.dataset, "queries": result.queries,
                               "latency_ms": result.latency_ms}))
        return
    typer.echo(f"{result.dataset}: {result.queries} queries")
    typer.echo(table(result.rows))


def register(app: typer.Typer) -> None:
    """Mount `ladder eval retrieval` (other evaluations join the same `eval` group)."""
    eval_app = typer.Typer(help="Evaluations: retrieval quality on BEIR datasets.", no_args_is_help=True)
    eval_app.command("retrieval")(retrieval)
    app.add_typer(eval_app, name="eval")
