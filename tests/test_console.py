"""The console adapter and the `ladder` CLI, driven as a user would: subprocesses over stdin/stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR
from tests.fakes.ollama_server import FakeOllama

LADDER = [sys.executable, "-m", "bot.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
async def fake():
    server = FakeOllama(canned="Hello from the fake model.")
    server.add_model("llama3.1:8b")
    await server.start()
    yield server
    await server.stop()


def run(args: list[str], env: dict[str, str], stdin: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "LADDER_MODELS_DIR": str(MODELS_DIR), **env}
    return subprocess.run(LADDER + args, input=stdin, capture_output=True, text=True, timeout=timeout, env=full,
                          cwd=ROOT)


@pytest.fixture
def env(tmp_path, database_url, fake) -> dict[str, str]:
    return {"LADDER_DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LLM_BACKEND": "ollama",
            "OLLAMA_HOST": fake.url, "LLM_MODEL": "llama3.1:8b"}


def test_repl_answers_and_lists_commands(env):
    out = run(["chat"], env, stdin="/help\nhello there\n/quit\n")
    assert out.returncode == 0, out.stderr
    assert "/models" in out.stdout and "Hello from the fake model." in out.stdout
    assert "llama3.1:8b via ollama" in out.stdout and out.stdout.rstrip().endswith("bye")


def test_repl_stays_up_when_ollama_is_unreachable(env):
    env["OLLAMA_HOST"] = "http://127.0.0.1:9"
    out = run(["chat"], env, stdin="hello\n/explain lora\n")
    assert out.returncode == 0, out.stderr
    assert "Cannot reach Ollama at http://127.0.0.1:9" in out.stdout
    assert "Low-Rank Adaptation" in out.stdout  # the next command still works
    assert "Traceback" not in out.stdout + out.stderr


def test_repl_reports_bad_commands_in_one_line(env):
    out = run(["chat"], env, stdin="/modles list\n/models use\n")
    assert "Unknown command /modles. Did you mean /models?" in out.stdout
    assert "Name the model: /models use NAME" in out.stdout


def test_ask_json_output(env):
    out = run(["ask", "Say hi", "--json"], env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"text", "model", "backend", "prompt_tokens", "completion_tokens", "latency_ms"}
    assert (data["model"], data["backend"]) == ("llama3.1:8b", "ollama") and data["completion_tokens"] > 0


def test_ask_runs_slash_commands(env):
    out = run(["ask", "/explain perplexity"], env)
    assert out.returncode == 0 and "exponential of the average negative log-likelihood" in out.stdout


def test_models_info_without_a_server(env):
    env["OLLAMA_HOST"] = "http://127.0.0.1:9"
    out = run(["models", "info", "deepseek-r1:1.5b-qwen-distill-q4_K_M"], env)
    assert out.returncode == 0, out.stderr
    for expected in ("deepseek-r1", "1.5B", "Q4_K_M", "GB"):
        assert expected in out.stdout


def test_database_unavailable_is_one_clear_line(tmp_path):
    env = {"LADDER_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://ladder:hunter2@127.0.0.1:1/ladder"}
    out = run(["ask", "hi"], env, timeout=60)
    assert out.returncode == 3
    assert "Cannot connect to the database at postgresql+psycopg://ladder:***@127.0.0.1:1/ladder" in out.stderr
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr + out.stdout


def test_embedded_model_answers_end_to_end(tmp_path, database_url):
    """No Ollama anywhere: the real embedded SmolLM2 answers (converted from its GGUF on first use)."""
    env = {"LADDER_DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LLM_BACKEND": "auto",
           "OLLAMA_HOST": "http://127.0.0.1:9", "MAX_ANSWER_TOKENS": "48"}
    out = run(["ask", "What is 38 multiplied by 47?", "--template", "cot", "--json"], env, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["backend"] == "local" and data["model"] == "smollm2:135m-instruct"
    assert data["completion_tokens"] > 0 and len(data["text"]) > 20
