"""Retrieval evaluation: metrics on hand-made judgements, and `ladder eval retrieval` on a SciFact subset."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from bot.errors import UserError
from knowledge.eval import (
    METRICS,
    documents,
    evaluate,
    load_dataset,
    mrr,
    ndcg,
    recall,
    score_run,
    source_name,
    table,
)
from tests.conftest import DATASETS

SCIFACT = DATASETS / "scifact"
N_QUERIES, N_DOCS = 20, 100


def test_metrics_on_a_hand_made_example():
    rels = {"a": 1, "b": 1, "c": 2}
    ranked = ["x", "c", "y", "a"]
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(ranked, rels) == pytest.approx(dcg / idcg)
    assert ndcg(["c", "a", "b"], rels) == pytest.approx(1.0)
    assert recall(ranked, rels, 10) == pytest.approx(2 / 3) and recall(ranked, rels, 1) == 0.0
    assert mrr(ranked, rels) == 0.5 and mrr(["x"] * 10 + ["a"], rels) == 0.0
    run = {"q1": ranked, "q2": []}
    scores = score_run(run, {"q1": rels, "q2": {"z": 1}})
    assert scores["mrr@10"] == 0.25 and scores["recall@100"] == pytest.approx(1 / 3, abs=1e-4)
    assert documents(["d1", "d2", "d1", "d3"]) == ["d1", "d2", "d3"]


def test_table_shows_each_mode_and_says_when_rerank_is_off():
    rows = [{"mode": "hybrid", **dict.fromkeys(METRICS, 0.5)},
            {"mode": "hybrid+rerank", **dict.fromkeys(METRICS), "note": "off (no reranker model files)"}]
    lines = table(rows).splitlines()
    assert lines[0].split() == ["mode", *METRICS] and "0.5000" in lines[2] and "off" in lines[3]


def test_a_folder_that_is_not_beir_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="corpus.jsonl"):
        load_dataset(tmp_path)


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """The first N_QUERIES SciFact test queries, their relevant documents, and distractors up to N_DOCS."""
    out = tmp_path_factory.mktemp("beir") / "scifact-mini"
    (out / "qrels").mkdir(parents=True)
    lines = (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()
    qids = list(dict.fromkeys(line.split("\t")[0] for line in lines[1:]))[:N_QUERIES]
    judged = [line for line in lines[1:] if line.split("\t")[0] in qids]
    wanted = {line.split("\t")[1] for line in judged}
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text().splitlines()]
    rest = [d for d in corpus if d["_id"] not in wanted]
    random.Random(0).shuffle(rest)
    docs = [d for d in corpus if d["_id"] in wanted] + rest
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[:N_DOCS]))
    (out / "qrels" / "test.tsv").write_text("\n".join([lines[0], *judged]) + "\n")
    queries = [q for q in (SCIFACT / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in qids]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n")
    return out


async def test_eval_on_a_scifact_subset_then_reuses_the_index(ctx, subset):
    first = await evaluate(ctx, subset, keep=True)
    assert first.queries == N_QUERIES and [r["mode"] for r in first.rows] == [
        "dense", "fulltext", "hybrid", "hybrid+rerank"]
    rows = {r["mode"]: r for r in first.rows}
    assert rows["hybrid"]["ndcg@10"] > 0.3 and rows["dense"]["ndcg@10"] > 0.2 and rows["fulltext"]["ndcg@10"] > 0.2
    assert all(0 <= rows[m][metric] <= 1 for m in ("dense", "fulltext", "hybrid") for metric in METRICS)
    assert rows["hybrid"]["recall@100"] >= rows["hybrid"]["recall@10"]
    assert rows["hybrid+rerank"]["ndcg@10"] is None and "off" in rows["hybrid+rerank"]["note"]
    assert first.ingest["chunks_embedded"] > 0 and first.ingest["added"] == N_DOCS

    again = await evaluate(ctx, subset, keep=True, limit=5)  # --keep: nothing re-embedded
    assert again.ingest["chunks_embedded"] == 0 and again.ingest["added"] == 0 and again.queries == 5


async def test_eval_documents_are_invisible_to_the_team(ctx, subset):
    from knowledge.acl import Audience
    from knowledge.retrieve import search
    from knowledge.sync import embedder_for

    async with ctx.db() as session:
        hits = await search(session, "cancer cells", Audience(("public",)), embedder=embedder_for(ctx))
    assert hits == []


def test_cli_prints_json_rows_from_the_kept_index(ctx, subset, settings, monkeypatch):
    from bot import cli
    from bot.config import get_settings

    monkeypatch.setenv("DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("LADDER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["eval", "retrieval", "--dataset", str(subset), "--json", "--keep",
                                              "--limit", "3"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()  # --json: stdout is the JSON alone (progress goes to stderr)
    assert lines, result.output
    assert len(lines) == 1, result.stdout
    payload = json.loads(lines[0])
    assert [r["mode"] for r in payload["rows"]] == ["dense", "fulltext", "hybrid", "hybrid+rerank"]
    assert payload["queries"] == 3 and set(METRICS) <= set(payload["rows"][2])


async def test_without_keep_the_copy_is_removed(ctx, subset):
    await evaluate(ctx, subset, keep=False, limit=2, modes=("fulltext",))
    async with ctx.db() as session:
        left = (await session.execute(text("SELECT count(*) FROM sources WHERE name = :n"),
                                      {"n": source_name(subset.name)})).scalar_one()
    assert left == 0
