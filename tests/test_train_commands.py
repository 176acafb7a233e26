"""Admin training commands through the real router: /train, /jobs, /job, /cancel, /workers, /deploy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

import tests.training_recipes  # noqa: F401  (registers the test-only `count` recipe)
from bot import scheduler
from bot.models import AuditLog, SchedulerJob
from training import queue, schedule
from training.models import Job


async def job_count(ctx) -> int:
    async with ctx.db() as session:
        return await session.scalar(select(func.count()).select_from(Job))


async def _clear(ctx) -> None:
    async with ctx.db() as session, session.begin():
        await session.execute(text("DELETE FROM jobs"))
        await session.execute(text("DELETE FROM workers"))


async def test_non_admin_train_is_refused_audited_and_queues_nothing(bot, ctx):
    await _clear(ctx)
    reply = await bot.push("/train count steps=3", user="U-intern", is_admin=False, platform="slack", channel="C1")
    assert reply.error and "admins only" in reply.text
    assert await job_count(ctx) == 0
    async with ctx.db() as session:
        row = (await session.execute(select(AuditLog).where(AuditLog.user_id == "U-intern"))).scalar_one()
    assert row.action == "command:train" and row.allowed is False
    for cmd in ("/jobs", "/cancel 1", "/deploy 1 x", "/workers"):
        assert "admins only" in (await bot.push(cmd, user="U-intern", is_admin=False)).text
    async with ctx.db() as session:
        refusals = (await session.execute(select(AuditLog.action).where(AuditLog.user_id == "U-intern",
                                                                         AuditLog.allowed.is_(False)))).scalars()
        assert {"command:jobs", "command:cancel", "command:deploy", "command:workers"} <= set(refusals)
    unknown = await bot.push("/cancel pdeadbeef", user="U-intern", is_admin=False)  # a pending action, not a job
    assert "admins only" not in unknown.text


async def test_unknown_recipe_and_bad_params_are_clear_one_liners(bot, ctx):
    await _clear(ctx)
    cases = {
        "/train lorra base=smollm2": "Did you mean `lora`",
        "/train count stepz=3": "Unknown parameter `stepz`",
        "/train count steps=many": "steps must be a whole number",
        "/train count steps=0": "out of range",
        "/train count steps": "Bad argument 'steps'",
        "/train": "Name a recipe",
        "/train lora base=nope data=kb": "Unknown base model `nope`",
        "/train lora base=smollm2 data=/no/such/file.jsonl": "no/such/file.jsonl",
        "/train count steps=3 at=tomorrow": "Bad time at=tomorrow",
        "/train count steps=3 at=2020-01-01T00:00": "in the past",
        '/train count steps=3 cron="every day"': "Bad cron expression",
        "/train qlora base=tiny-llama data=kb": "needs a CUDA GPU",
    }
    for command, expected in cases.items():
        reply = await bot.push(command)
        assert reply.error and expected in reply.text and "\n" not in reply.text, (command, reply.text)
    assert await job_count(ctx) == 0


async def test_an_attached_jsonl_is_the_dataset_and_a_bad_line_is_named(bot, ctx):
    import json

    from bot.messages import Attachment

    await _clear(ctx)
    good = "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(4)).encode()
    reply = await bot.push("/train lora base=tiny-llama steps=2", attachments=(Attachment("my faq.jsonl", good),))
    assert reply.text.startswith("Queued job"), reply.text
    job = await queue.get_job(ctx.db, reply.data["job_id"])
    assert job.params["data"].endswith("my_faq.jsonl") and open(job.params["data"], "rb").read() == good
    bad = good + b'{"instruction": "x", "output"\n'
    reply = await bot.push("/train lora base=tiny-llama steps=3", attachments=(Attachment("bad.jsonl", bad),))
    assert reply.error and "line 5" in reply.text, reply.text
    assert await job_count(ctx) == 1


async def test_train_queues_shows_memory_and_workers_and_dedupes(bot, ctx):
    await _clear(ctx)
    first = await bot.push("/train count steps=3 memory_gb=2.5", channel="C7", thread="t1")
    assert not first.error and first.text.startswith("Queued job ") and "estimated memory 2.5 GB" in first.text
    assert "No worker is running" in first.text
    job_id = first.data["job_id"]
    again = await bot.push("/train count steps=3 memory_gb=2.5", channel="C7", thread="t1")
    assert again.text.startswith(f"Already queued as job {job_id}")
    assert await job_count(ctx) == 1
    job = await queue.get_job(ctx.db, job_id)
    assert (job.channel, job.thread, job.est_memory_gb, job.params) == ("C7", "t1", 2.5,
                                                                        {"steps": "3", "memory_gb": "2.5"})

    async with ctx.db() as session, session.begin():
        session.add_all([
            queue.Worker(id="small", hostname="laptop", device="cpu", memory_gb=1.0, tags=[]),
            queue.Worker(id="big", hostname="gpu-box", device="cuda", gpu_name="H100", gpu_count=1,
                         gpu_memory_gb=80.0, memory_gb=80.0, torch_version="2.5", cuda_version="12.4", tags=["a"]),
        ])
    other = await bot.push("/train count steps=4 memory_gb=2.5")
    assert "Workers that can take it: gpu-box (H100, 80 GB)" in other.text and "laptop" not in other.text
    listing = (await bot.push("/workers")).text
    assert "big: H100 x1, 80 GB, torch 2.5, CUDA 12.4, tags a, idle" in listing and "small: CPU" in listing


async def test_jobs_job_and_cancel(bot, ctx):
    await _clear(ctx)
    job_id = (await bot.push("/train count steps=9")).data["job_id"]
    assert f"#{job_id} count queued by tester" in (await bot.push("/jobs")).text
    detail = (await bot.push(f"/job {job_id}")).text
    assert f"Job {job_id}: count steps=9" in detail and "status queued, attempt 0 of 3" in detail
    assert "Cancelled job" in (await bot.push(f"/cancel {job_id}")).text
    assert (await queue.get_job(ctx.db, job_id)).status == "cancelled"
    assert "There is no job 424242" in (await bot.push("/job 424242")).text
    assert "Give the job number" in (await bot.push("/cancel abc")).text
    assert "only a succeeded job can be deployed" in (await bot.push(f"/deploy {job_id} mine")).text


async def test_at_and_cron_are_persisted_schedules(bot, ctx):
    await _clear(ctx)
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    reply = await bot.push(f"/train count steps=3 at={at.strftime('%Y-%m-%dT%H:%M')}")
    assert "Scheduled /train count steps=3 at" in reply.text, reply.text
    reply = await bot.push('/train count steps=5 cron="0 2 * * 6"')
    assert 'on cron "0 2 * * 6"' in reply.text and "next:" in reply.text
    async with ctx.db() as session:
        ids = set((await session.execute(select(SchedulerJob.id))).scalars())
    assert len([i for i in ids if i.startswith(schedule.PREFIX)]) == 2
    assert await job_count(ctx) == 0  # nothing queued until a schedule fires
    scheduler.shutdown(ctx)


async def test_a_schedule_firing_twice_queues_one_job(ctx):
    await _clear(ctx)
    scheduler.get(ctx, start=False)
    payload = dict(recipe="count", params={"steps": "3"}, requested_by="admin", platform="console",
                   workspace="local", channel="test", thread=None, est_memory_gb=0.1)
    fire_time = "2026-12-26T02:00:00+00:00"
    try:
        await schedule.fire("abc123", payload, fire_time)
        await schedule.fire("abc123", payload, fire_time)  # a second replica, or a retry
        await schedule.fire("abc123", payload, "2026-12-26T02:00:30+00:00")  # same minute, jittered
        assert await job_count(ctx) == 1
        await schedule.fire("abc123", payload, "2027-01-02T02:00:00+00:00")  # next week's run
        assert await job_count(ctx) == 2
    finally:
        scheduler.shutdown(ctx)


async def test_lora_end_to_end_worker_report_deploy_and_answer(bot, ctx, settings, tmp_path):
    """/train lora on a tiny model -> a real `python -m training.worker --once` -> report -> /deploy -> answers."""
    import json

    from bot.llm.hub import ModelHub
    from bot.models import ModelRegistry
    from tests.fakes.recording_platform import RecordingPlatform
    from tests.test_training_worker import start_worker, wait_for
    from training import deploy
    from training.notifier import Notifier

    await _clear(ctx)
    data = tmp_path / "colours.jsonl"
    colours = ["red red red", "blue blue", "green green green green", "yellow"]
    data.write_text("".join(json.dumps({"instruction": f"Colour {i % 4}?", "output": colours[i % 4]}) + "\n"
                            for i in range(48)))
    fake = RecordingPlatform("fake")
    ctx.platforms["fake"] = fake
    try:
        queued = await bot.push(f"/train lora base=tiny-llama data={data} steps=6 batch_size=8 lr=3e-2 r=8 "
                                "log_every=1 checkpoint_every=3 samples=1 max_new_tokens=4",
                                platform="fake", channel="C1", thread="T9")
        assert queued.text.startswith("Queued job"), queued.text
        job_id = queued.data["job_id"]
        worker = start_worker(settings, "--once")
        try:
            async def finished():
                job = await queue.get_job(ctx.db, job_id)
                return job if job.status in ("succeeded", "failed") else None
            job = await wait_for(finished, timeout=300, what="the lora job")
            assert worker.wait(60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
        assert job.status == "succeeded", job.error
        assert job.result["ppl_after"] < job.result["ppl_before"]
        await Notifier(ctx).tick()
        report = fake.posts[-1][2]
        assert report.text.startswith(f"Job {job_id} (lora) succeeded") and "ppl_after" in report.text
        assert report.files and report.files[0].data.startswith(b"\x89PNG")
        assert any("step 6/6" in r.text for _, _, r in fake.updates) or "step 6/6" in fake.posts[0][2].text
    finally:
        ctx.platforms.pop("fake")

    reply = await bot.push(f"/deploy {job_id} colours-bot")
    assert reply.text.startswith(f"Deployed job {job_id} as colours-bot (local backend, base + adapter)"), reply.text
    async with ctx.db() as session:
        row = (await session.execute(select(ModelRegistry).where(ModelRegistry.name == "colours-bot"))).scalar_one()
    assert row.source_job_id == job_id and row.adapter_path.endswith("adapter")
    assert "colours-bot (local)" in (await bot.push("/models use colours-bot")).text
    answer = await bot.push("/ask Colour 1?")
    assert not answer.error and answer.model == "colours-bot", answer.text

    fresh = ModelHub.from_settings(settings)  # a restarted bot: the deployment comes back from model_registry
    original, ctx.models = ctx.models, fresh
    try:
        assert await deploy.restore(ctx) >= 1 and "colours-bot" in fresh.backends["local"].extra
    finally:
        ctx.models = original


async def test_deploy_to_ollama_creates_from_base_and_adapter(bot, ctx):
    """FROM base + ADAPTER through the Ollama API (blobs uploaded first), against the fake Ollama."""
    import hashlib
    import json

    from bot.llm.hub import ModelHub
    from tests.fakes.ollama_server import FakeOllama
    from training.models import Job as JobRow

    await _clear(ctx)
    async with ctx.db() as session, session.begin():
        row = JobRow(recipe="lora", params={}, status="succeeded", requested_by="a", platform="console",
                     workspace="local", channel="test", idempotency_key="ollama-deploy", result={"ppl_after": 6.6})
        session.add(row)
    workdir = ctx.settings.artifact_dir / f"job-{row.id}"
    adapter = workdir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights" * 100)
    (workdir / "deploy.json").write_text(json.dumps({"base": "smollm2", "base_path": str(workdir),
                                                     "adapter_path": str(adapter)}))
    async with FakeOllama() as fake:
        fake.add_model("smollm2:135m", parameter_size="135M")
        saved = ctx.settings, ctx.models
        ctx.settings = ctx.settings.model_copy(update={"ollama_host": fake.url})
        ctx.models = ModelHub.from_settings(ctx.settings)
        try:
            missing = await bot.push(f"/deploy {row.id} faq backend=ollama")
            assert missing.error and "from=" in missing.text
            bad_base = await bot.push(f"/deploy {row.id} faq backend=ollama from=nope:1b")
            assert bad_base.error and "base model 'nope:1b' not found" in bad_base.text
            reply = await bot.push(f"/deploy {row.id} faq backend=ollama from=smollm2:135m")
            assert reply.text.startswith(f"Deployed job {row.id} as faq on Ollama"), reply.text
            digest = "sha256:" + hashlib.sha256(b"weights" * 100).hexdigest()
            assert fake.created["faq"]["from"] == "smollm2:135m"
            assert fake.created["faq"]["adapters"]["adapter_model.safetensors"] == digest
            assert (workdir / "Modelfile").read_text().startswith("FROM smollm2:135m\nADAPTER ")
            assert "faq (ollama)" in (await bot.push("/models use faq")).text
        finally:
            ctx.settings, ctx.models = saved
