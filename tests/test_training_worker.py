"""The worker as a real subprocess (`python -m training.worker --device cpu`) against the embedded Postgres.

Uses the test-only `count` recipe (tests/training_recipes.py), loaded in the worker's job processes
through LADDER_EXTRA_RECIPES.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import tests.training_recipes  # noqa: F401  (registers `count` in this process too)
from tests.fakes.recording_platform import RecordingPlatform
from training import queue
from training.notifier import Notifier
from training.queue import Submission
from training.worker import child_command, error_tail

ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url.get_secret_value(),
           "LADDER_DATA_DIR": str(settings.data_dir), "LADDER_ARTIFACT_DIR": str(settings.artifact_dir),
           "LADDER_MODELS_DIR": str(settings.model_cache_dir), "LADDER_EXTRA_RECIPES": "tests.training_recipes",
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return env


def start_worker(settings, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "training.worker", "--device", "cpu", "--threads", "1", "--lease-s", "2",
            "--heartbeat-s", "0.5", "--poll-s", "0.2", *extra]
    return subprocess.Popen(args, cwd=ROOT, env=worker_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


async def wait_for(check: Callable, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def count_job(**params) -> Submission:
    return Submission(recipe="count", params={k: str(v) for k, v in params.items()}, requested_by="admin",
                      platform="fake", workspace="W", channel="C1", thread="T1",
                      idempotency_key=f"worker-test:{time.monotonic_ns()}")


async def status_of(ctx, job_id: int, *statuses: str):
    job = await queue.get_job(ctx.db, job_id)
    return job if job.status in statuses else None


async def test_sigkilled_worker_job_is_resumed_by_another_and_reported_once(ctx, settings):
    job, _ = await queue.submit(ctx.db, count_job(steps=25, sleep=0.15))
    first = start_worker(settings)
    try:
        async def progressed():
            j = await queue.get_job(ctx.db, job.id)
            steps = [e for e in await queue.events(ctx.db, job.id) if e.kind == "progress"]
            return j.checkpoint_path and len(steps) >= 4
        await wait_for(progressed, what="the first worker to checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = len([e for e in await queue.events(ctx.db, job.id) if e.kind == "progress"])
    assert (await queue.get_job(ctx.db, job.id)).status == "running"  # nobody has noticed yet

    second = start_worker(settings, "--once")
    try:
        done = await wait_for(lambda: status_of(ctx, job.id, "succeeded", "failed"), what="the second worker")
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert done.status == "succeeded", done.error
    assert done.attempts == 2
    assert done.result["resumed_at"] >= killed_at - 1 > 0 and done.result["steps"] == 25
    events = await queue.events(ctx.db, job.id)
    states = [(e.data["status"], e.data.get("reason")) for e in events if e.kind == "state"]
    assert states == [("queued", None), ("running", None), ("queued", "lease expired"), ("running", None),
                      ("succeeded", None)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    fake = RecordingPlatform("fake")
    ctx.platforms["fake"] = fake
    try:
        notifier = Notifier(ctx)
        assert await notifier.tick() == len(events)
        assert await notifier.tick() == 0
        progress, report = [r for _, _, r, _ in fake.posts]  # one progress message + one report
        assert progress.text.startswith(f"Job {job.id} · count · succeeded")
        assert report.text.startswith(f"Job {job.id} (count) succeeded") and "| steps | 25 |" in report.text
        assert report.files[0].data.startswith(b"\x89PNG")
        assert all(thread == "T1" and channel == "C1" for channel, thread, _, _ in fake.posts)
    finally:
        ctx.platforms.pop("fake")


@pytest.fixture(scope="module")
def worker(settings, ctx):
    proc = start_worker(settings)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_a_crashing_job_fails_not_the_worker(ctx, worker):
    raised, _ = await queue.submit(ctx.db, count_job(steps=5, fail_at=2))
    killed, _ = await queue.submit(ctx.db, count_job(steps=5, die_at=2))
    fine, _ = await queue.submit(ctx.db, count_job(steps=2))
    done = await wait_for(lambda: status_of(ctx, fine.id, "succeeded", "failed"), what="the third job")
    assert done.status == "succeeded"
    first = await queue.get_job(ctx.db, raised.id)
    assert first.status == "failed" and "RuntimeError: boom at step 2" in first.error
    second = await queue.get_job(ctx.db, killed.id)
    assert second.status == "failed" and "SIGKILL" in second.error
    assert first.attempts == second.attempts == 1  # a crash fails the job; only a lost lease retries
    assert worker.poll() is None


async def test_cancel_stops_a_running_job(ctx, worker):
    job, _ = await queue.submit(ctx.db, count_job(steps=2000, sleep=0.05))

    async def progressing():
        return any(e.kind == "progress" for e in await queue.events(ctx.db, job.id))
    await wait_for(progressing, what="the job to start")
    assert "stops after the current step" in await queue.cancel(ctx.db, job.id, "admin")
    done = await wait_for(lambda: status_of(ctx, job.id, "cancelled", "succeeded", "failed"), what="the cancel")
    assert done.status == "cancelled"
    steps = [e.data["step"] for e in await queue.events(ctx.db, job.id) if e.kind == "progress"]
    assert max(steps) < 2000
    live = await queue.live_workers(ctx.db)
    assert any(w.device == "cpu" and w.memory_gb > 0 and w.torch_version for w in live)


def test_several_gpus_use_accelerate_launch():
    class J:
        id, attempts, devices = 7, 2, 4

    cmd = child_command(J, "cuda", 0)
    assert cmd[1:4] == ["launch", "--num_processes", "4"] and cmd[-8:-6] == ["training.run_job", "7"]
    J.devices = 1
    assert child_command(J, "cpu", 2)[:3] == [sys.executable, "-m", "training.run_job"]


def test_error_tail_names_the_signal(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("\n".join(f"line {i}" for i in range(40)))
    tail = error_tail(log, -9)
    assert "SIGKILL" in tail and "line 39" in tail and "line 10" not in tail
    assert error_tail(tmp_path / "missing.log", 3) == "The job's process exited with code 3."


async def test_console_flow_train_in_chat_worker_elsewhere_report_with_png_in_chat(ctx, settings, tmp_path):
    """`ladder chat` -> /train lora ... ; `ladder worker --device cpu` in another process -> the report
    (with the PNG saved as a file) appears in the chat."""
    import json
    import threading

    data = tmp_path / "colours.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Colour {i % 4}?", "output": ["red", "blue"][i % 2]}) + "\n"
                            for i in range(24)))
    env = {**worker_env(settings), "LLM_BACKEND": "local", "OLLAMA_HOST": "http://127.0.0.1:9"}
    ladder = str(Path(sys.executable).with_name("ladder"))
    chat = subprocess.Popen([ladder, "chat"], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(chat.stdout.readline, "")), daemon=True)
    reader.start()
    worker = None
    try:
        chat.stdin.write(f"/train lora base=tiny-llama data={data} steps=4 batch_size=4 log_every=1 samples=1 "
                         "max_new_tokens=4 tags=console\n")  # tags: only the worker started below may take it
        chat.stdin.flush()

        async def seen(fragment: str):
            return next((line for line in list(lines) if fragment in line), None)
        queued = await wait_for(lambda: seen("Queued job"), what="the chat to queue the job")
        job_id = int(queued.split("Queued job ")[1].split(":")[0])
        worker = subprocess.Popen([ladder, "worker", "--device", "cpu", "--once", "--poll-s", "0.2",
                                   "--tags", "console"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await wait_for(lambda: seen(f"Job {job_id} (lora) succeeded"), timeout=300, what="the report in the chat")
        png_line = await wait_for(lambda: seen(f"job-{job_id}-"), what="the PNG file line")
        png = Path(png_line.split("file:")[1].strip())
        assert png.read_bytes().startswith(b"\x89PNG")
        assert worker.wait(60) == 0
    finally:
        for proc in (worker, chat):
            if proc is not None and proc.poll() is None:
                if proc is chat:
                    chat.stdin.write("/quit\n")
                    chat.stdin.flush()
                    try:
                        chat.wait(30)
                        continue
                    except subprocess.TimeoutExpired:
                        pass
                proc.kill()
