"""`ladder run` with Slack env vars, as a subprocess: it connects over Socket Mode to the fake Slack
(apps.connections.open with the app token, then the WebSocket), answers an event pushed through the socket
in the event's thread, acknowledges the envelope, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.slack_api import FakeSlack, event_body
from tests.slack_helpers import MODEL, mention

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeOllama]]:
    slack, ollama = FakeSlack(), FakeOllama(canned="Hello from Socket Mode.")
    slack.add_channel("CRUN", "general", members=["UANN", "UBOT"])
    slack.add_user("UANN", "ann")
    ollama.add_model(MODEL)
    await slack.start()
    await ollama.start()
    yield slack, ollama
    await slack.stop()
    await ollama.stop()


async def test_ladder_run_with_slack_tokens_uses_socket_mode(fakes, database_url: str, tmp_path: Path) -> None:
    slack, ollama = fakes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-run", SLACK_APP_TOKEN="xapp-run", SLACK_API_URL=slack.api_url,
               DATABASE_URL=database_url, LADDER_DATA_DIR=str(tmp_path), LADDER_MODELS_DIR=str(MODELS_DIR),
               LLM_BACKEND="ollama", OLLAMA_HOST=ollama.url, LLM_MODEL=MODEL, STREAM_EDIT_INTERVAL_S="0")
    proc = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await slack.wait_for(lambda: slack.sockets or proc.poll() is not None, 120)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        opened = slack.calls_to("apps.connections.open")
        assert opened and opened[0]["_token"] == "xapp-run"
        envelope = slack.send_envelope("events_api", event_body(mention("CRUN", "77.1", "hello?"), "EvRUN"))
        await slack.wait_for(lambda: any(a.get("envelope_id") == envelope for a in slack.acks), 30)
        await slack.wait_for(lambda: any("Hello from Socket Mode." in m["text"] for m in slack.messages["CRUN"]), 60)
        assert slack.messages["CRUN"][-1]["thread_ts"] == "77.1"
        assert all(c["_token"] == "xoxb-run" for m, c in slack.calls if m.startswith("chat."))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 130, out[-3000:]  # Ctrl-C: a clean stop
    assert "xoxb-run" not in out and "xapp-run" not in out  # secrets never in logs
