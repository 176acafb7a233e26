"""Sync against the real embedded Postgres and the packaged embedding model: incremental, deletions, faults,
locking, commands, schedules, model mismatch, Slack export import."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bot import scheduler
from bot.errors import UserError
from knowledge import admin, store
from knowledge.embedding import Embedder
from knowledge.models import Chunk, Document, Source
from knowledge.sync import embedder_for, reindex, sync_source
from tests.test_knowledge_sources import DATASETS, encrypted_pdf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedder(ctx) -> Embedder:
    return embedder_for(ctx)


def paragraphs(topic: str, n: int) -> str:
    return "\n\n".join(f"{topic} paragraph {i}: the {topic} team keeps notes about item {i} here." for i in range(n))


def make_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\n" + paragraphs(f"topic{i}", 3))
    return root


async def state(ctx, name: str) -> tuple[list, list]:
    """Documents and chunks of a source, independent of row ids."""
    async with ctx.db() as s:
        sid = (await s.execute(select(Source.id).where(Source.name == name))).scalar_one()
        docs = (await s.execute(select(Document.external_id, Document.content_hash, Document.acl)
                                .where(Document.source_id == sid).order_by(Document.external_id))).all()
        chunks = (await s.execute(select(Document.external_id, Chunk.ord, Chunk.content_hash, Chunk.text, Chunk.acl)
                                  .join(Document).where(Document.source_id == sid)
                                  .order_by(Document.external_id, Chunk.ord))).all()
    return [tuple(map(str, d)) for d in docs], [tuple(map(str, c)) for c in chunks]


async def test_incremental_folder_sync(ctx, embedder, tmp_path: Path):
    folder = make_folder(tmp_path / "inc", 3)
    await admin.add_source(ctx, "inc", kind="folder", config={"path": str(folder), "chunk_tokens": "40",
                                                              "chunk_overlap": "0"})
    first = await sync_source(ctx.db, "inc", embedder=embedder)
    assert (first.added, first.updated, first.removed) == (3, 0, 0)
    assert first.chunks_embedded == first.chunks_written >= 6
    assert set(first.timings) == {"read", "chunk", "embed", "write"}

    again = await sync_source(ctx.db, "inc", embedder=embedder)
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)

    os.utime(folder / "doc0.md", (time.time() + 5, time.time() + 5))  # touched, same content
    touched = await sync_source(ctx.db, "inc", embedder=embedder)
    assert (touched.updated, touched.chunks_embedded) == (0, 0)

    before = await state(ctx, "inc")
    doc1 = folder / "doc1.md"
    doc1.write_text(doc1.read_text() + "\n\nA brand new closing paragraph about budgets.")
    changed = await sync_source(ctx.db, "inc", embedder=embedder)
    assert (changed.updated, changed.added) == (1, 0)
    assert changed.chunks_embedded == 1  # only the new chunk; the others reuse their stored embeddings
    after = await state(ctx, "inc")
    old, new = {c[2] for c in before[1] if c[0] == "doc1.md"}, {c[2] for c in after[1] if c[0] == "doc1.md"}
    assert len(new - old) == 1 and len(old & new) == len(old) - 1  # one chunk changed, the rest kept
    assert [c for c in before[1] if c[0] != "doc1.md"] == [c for c in after[1] if c[0] != "doc1.md"]

    (folder / "doc2.md").unlink()
    removed = await sync_source(ctx.db, "inc", embedder=embedder)
    assert removed.removed == 1
    docs, chunks = await state(ctx, "inc")
    assert [d[0] for d in docs] == ["doc0.md", "doc1.md"]
    assert not [c for c in chunks if c[0] == "doc2.md"]
    async with ctx.db() as s:
        row = (await s.execute(select(Source).where(Source.name == "inc"))).scalar_one()
        assert set(row.cursor["docs"]) == {"doc0.md", "doc1.md"} and row.status == "ok"


async def test_bad_pdfs_are_skipped_and_shown_in_status(ctx, embedder, tmp_path: Path, bot):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "ok.md").write_text("# Fine\n\nreadable")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    (folder / "locked.pdf").write_bytes(encrypted_pdf("secret"))
    (folder / "latin.txt").write_bytes("naïve café".encode("latin-1"))
    await admin.add_source(ctx, "pdfs", kind="folder", config={"path": str(folder)})
    report = await sync_source(ctx.db, "pdfs", embedder=embedder)
    assert report.added == 2
    assert {s["document"] for s in report.skipped} == {"corrupt.pdf", "locked.pdf"}
    assert "admins only" in (await bot.push("/sources status pdfs", is_admin=False)).text
    status = (await bot.push("/sources status pdfs")).text
    assert "skipped corrupt.pdf: corrupt PDF" in status and "skipped locked.pdf" in status
    assert "reranker" in status
    async with ctx.db() as s:
        stored = (await s.execute(select(Chunk.text).join(Document).where(Document.external_id == "latin.txt")))
        assert "naïve café" in stored.scalar_one()


async def test_missing_folder_is_a_clear_error(ctx, tmp_path: Path, bot):
    await admin.add_source(ctx, "ghost", kind="folder", config={"path": str(tmp_path / "nowhere")})
    reply = await bot.push("/sync ghost")
    assert reply.error and "does not exist" in reply.text
    status = (await bot.push("/sources status ghost")).text
    assert "error" in status and "does not exist" in status


KILL_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, time
    from bot import db
    from knowledge.embedding import Embedder
    from knowledge.sync import sync_source

    async def main():
        engine = db.make_engine(sys.argv[1])
        batches = 0
        async def progress(p):
            nonlocal batches
            batches += 1
            print("batch", batches, flush=True)
            if batches == 2:
                time.sleep(600)  # the test kills us here, between two committed batches
        await sync_source(db.sessionmaker(engine), "killme", embedder=Embedder.default(), progress=progress,
                          batch_docs=2)
    asyncio.run(main())
""")


async def test_sync_killed_half_way_then_rerun_matches_uninterrupted(ctx, embedder, settings, tmp_path: Path):
    folder = make_folder(tmp_path / "kill", 7)
    for name in ("killme", "reference"):
        await admin.add_source(ctx, name, kind="folder", config={"path": str(folder)})
    await sync_source(ctx.db, "reference", embedder=embedder)
    url = settings.database_url.get_secret_value()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, url], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while "batch 2" not in lines and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            lines.append(line.decode().strip())
        assert "batch 2" in lines, lines
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    half = await state(ctx, "killme")
    assert len(half[0]) == 4  # two batches of two committed, nothing more
    rerun = await sync_source(ctx.db, "killme", embedder=embedder)  # the lock died with the process
    assert rerun.added == 3 and rerun.chunks_embedded == 0  # same texts as the reference: embeddings reused
    got, want = await state(ctx, "killme"), await state(ctx, "reference")
    assert got == want
    assert len(set((c[0], c[1]) for c in got[1])) == len(got[1])  # no duplicate chunks


async def test_exception_mid_sync_then_rerun_matches(ctx, embedder, tmp_path: Path):
    folder = make_folder(tmp_path / "boom", 5)
    await admin.add_source(ctx, "boom", kind="folder", config={"path": str(folder)})
    await admin.add_source(ctx, "boom-ref", kind="folder", config={"path": str(folder)})
    await sync_source(ctx.db, "boom-ref", embedder=embedder)

    async def explode(p):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        await sync_source(ctx.db, "boom", embedder=embedder, progress=explode, batch_docs=2)
    async with ctx.db() as s:
        row = (await s.execute(select(Source).where(Source.name == "boom"))).scalar_one()
        assert row.status == "error" and "disk on fire" in row.last_error
    assert len((await state(ctx, "boom"))[0]) == 2
    await sync_source(ctx.db, "boom", embedder=embedder)
    assert await state(ctx, "boom") == await state(ctx, "boom-ref")


async def test_concurrent_syncs_never_interleave(ctx, embedder, tmp_path: Path):
    folder = make_folder(tmp_path / "conc", 4)
    await admin.add_source(ctx, "conc", kind="folder", config={"path": str(folder)})
    inside, release, events = asyncio.Event(), asyncio.Event(), []

    async def hold(p):
        events.append(("first", p.seen, p.done))
        inside.set()
        await release.wait()

    first = asyncio.create_task(sync_source(ctx.db, "conc", embedder=embedder, progress=hold, batch_docs=2))
    await asyncio.wait_for(inside.wait(), 60)
    with pytest.raises(UserError, match="already being synced"):
        await sync_source(ctx.db, "conc", embedder=embedder)

    async def note(p):
        events.append(("second", p.seen, p.done))

    second = asyncio.create_task(sync_source(ctx.db, "conc", embedder=embedder, progress=note, wait=True))
    await asyncio.sleep(0.3)
    assert not second.done()
    release.set()
    a, b = await asyncio.wait_for(asyncio.gather(first, second), 60)
    assert a.added == 4 and b.added == 0 and b.unchanged == 4
    whose = [e[0] for e in events]
    assert whose == sorted(whose)  # every progress of the first before any of the second


async def test_sync_command_is_admin_only_and_streams_progress(ctx, bot, tmp_path: Path):
    folder = make_folder(tmp_path / "cmd", 2)
    await admin.add_source(ctx, "cmd", kind="folder", config={"path": str(folder)})
    refused = await bot.push("/sync cmd", is_admin=False)
    assert refused.error and "admins only" in refused.text
    async with ctx.db() as s:
        assert (await s.execute(select(Document).join(Source).where(Source.name == "cmd"))).first() is None
    replies = await bot.stream("/sync cmd")
    assert all(r.partial for r in replies[:-1]) and len(replies) >= 2
    assert not replies[-1].partial and "cmd: 2 added" in replies[-1].text
    assert replies[-1].data["reports"][0]["added"] == 2


async def test_sources_commands(ctx, bot, tmp_path: Path):
    folder = make_folder(tmp_path / "srcs", 1)
    refused = await bot.push(f"/sources add team kind=folder path={folder}", is_admin=False)
    assert refused.error and "admins only" in refused.text
    added = await bot.push(f'/sources add team kind=folder path={folder} schedule="0 * * * *"')
    assert not added.error and "team (folder" in added.text
    dup = await bot.push(f"/sources add team kind=folder path={folder}")
    assert dup.error and "already exists" in dup.text
    assert (await bot.push("/sources add x kind=ftp path=/")).error
    assert "Bad cron" in (await bot.push(f"/sources add y kind=folder path={folder} schedule=nope")).text
    listed = (await bot.push("/sources list", is_admin=False)).text
    assert "team (folder" in listed and "documents" not in listed  # counts are for admins only
    assert "documents" in (await bot.push("/sources list")).text
    gone = await bot.push("/sources remove team")
    assert "Removed source team" in gone.text
    assert "team" not in (await bot.push("/sources list")).text
    assert (await bot.push("/sources remove team")).error


async def test_schedule_is_persisted_and_reloaded_by_a_new_scheduler(ctx, settings, tmp_path: Path):
    from bot.app import build_context, close

    row = await admin.add_source(ctx, "nightly", kind="folder", config={"path": str(tmp_path)},
                                 schedule="30 2 * * *")
    scheduler.shutdown(ctx)
    async with ctx.db() as s:
        stored = (await s.execute(text("select id from apscheduler_jobs"))).scalars().all()
    assert f"sync:{row.id}" in stored
    fresh = await build_context(settings, migrate=False)
    try:
        job = scheduler.get(fresh, start=True).get_job(f"sync:{row.id}")
        assert job is not None and job.func_ref == "knowledge.sync:scheduled_sync" and job.args == (row.id,)
        assert job.next_run_time.hour in range(24) and job.next_run_time.minute == 30
        await admin.remove_source(fresh, "nightly")
        assert scheduler.get(fresh).get_job(f"sync:{row.id}") is None
    finally:
        scheduler.shutdown(fresh)
        await close(fresh)


async def test_embedding_model_mismatch_asks_for_reindex(ctx, embedder, tmp_path: Path):
    folder = make_folder(tmp_path / "meta", 1)
    await admin.add_source(ctx, "meta", kind="folder", config={"path": str(folder)})
    async with ctx.db() as s, s.begin():
        real = await store.get_meta(s, "embedding")
        await store.set_meta(s, "embedding", {"model": "some-other-model", "dim": 768})
    with pytest.raises(UserError, match="ladder reindex"):
        await sync_source(ctx.db, "meta", embedder=embedder)
    async with ctx.db() as s:
        total = (await s.execute(select(func.count()).select_from(Chunk))).scalar_one()
    assert await reindex(ctx.db, embedder=embedder) == total
    async with ctx.db() as s:
        assert await store.get_meta(s, "embedding") == real
    assert (await sync_source(ctx.db, "meta", embedder=embedder)).added == 1


async def test_slack_exports_import_with_threads_and_private_acl(ctx, embedder, tmp_path: Path):
    path = DATASETS / "slack_export_houstondatavis" / "export"
    await admin.add_source(ctx, "houston", kind="slack_export", config={"path": str(path)})
    report = await sync_source(ctx.db, "houston", embedder=embedder)
    assert report.added == 237 and not report.skipped
    docs, chunks = await state(ctx, "houston")
    assert len(docs) == 237 and len(chunks) >= 237
    assert {c[4] for c in chunks} == {"['public']"}
    assert (await sync_source(ctx.db, "houston", embedder=embedder)).chunks_embedded == 0

    zpath = tmp_path / "private.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("channels.json", json.dumps([{"id": "C1", "name": "general"}]))
        z.writestr("groups.json", json.dumps([{"id": "G9", "name": "hr"}]))
        z.writestr("users.json", "[]")
        z.writestr("hr/2024-01-02.json", json.dumps([
            {"ts": "1704200000.000200", "user": "UA", "text": "salary bands", "thread_ts": "1704200000.000200",
             "reply_count": 1},
            {"ts": "1704200009.000200", "user": "UB", "text": "thanks", "thread_ts": "1704200000.000200"}]))
        z.writestr("general/2024-01-02.json", json.dumps([{"ts": "1704200000.000300", "user": "UA", "text": "hi"}]))
    await admin.add_source(ctx, "private", kind="slack_export", config={"path": str(zpath)})
    assert (await sync_source(ctx.db, "private", embedder=embedder)).added == 2
    docs, chunks = await state(ctx, "private")
    assert [(d[0], d[2]) for d in docs] == [("C1/2024-01-02", "['public']"),
                                            ("G9/thread/1704200000.000200", "['channel:slack:G9']")]
    assert [c[4] for c in chunks if c[0].startswith("G9")] == ["['channel:slack:G9']"]


async def test_unchanged_sync_does_not_load_the_embedding_model(ctx, embedder, tmp_path: Path):
    folder = tmp_path / "still"
    folder.mkdir()
    (folder / "a.md").write_text("# Still\n\nnothing changes here")
    await admin.add_source(ctx, "still", kind="folder", config={"path": str(folder)})
    await sync_source(ctx.db, "still", embedder=embedder)
    cold = Embedder.default(ctx.settings.embedding_model)
    report = await sync_source(ctx.db, "still", embedder=cold)
    assert report.unchanged == 1 and report.chunks_embedded == 0
    assert cold._model is None  # nothing to embed: the model was never loaded
