"""Shared fixtures: one real embedded Postgres per test session, a fresh database per test module,
a bot context wired like production, and a `TestBot` to `push(text)` and read replies."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bot.app import build_context, build_router, close  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.context import Context  # noqa: E402
from bot.messages import Incoming, Reply  # noqa: E402
from bot.router import Router  # noqa: E402

# ../shared/datasets beside the repository (CI lays a copy there); LADDER_SHARED_DATASETS overrides.
DATASETS = Path(os.environ.get("LADDER_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))

# The converted embedded model is shared by every test run on the machine (conversion takes ~20 s once).
MODELS_DIR = Path(os.environ.get("LADDER_TEST_MODELS_DIR", Path.home() / ".cache" / "ladder-tests" / "models"))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory):
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


def _sqlalchemy_url(uri: str, database: str) -> str:
    uri = re.sub(r"^postgresql://", "postgresql+psycopg://", uri)
    return re.sub(r"(://[^/]*/)[^?]*", rf"\g<1>{database}", uri, count=1)


@pytest.fixture(scope="module")
def database_url(pg_server, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for this test module (migrations not applied)."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.split(".")[-1])[:40] + "_" + uuid.uuid4().hex[:6]
    pg_server.psql(f'CREATE DATABASE "{name}";')
    return _sqlalchemy_url(pg_server.get_uri(), name)


def make_settings(tmp: Path, database_url: str, **overrides) -> Settings:
    values = dict(LADDER_DATA_DIR=tmp, database_url=database_url, LADDER_MODELS_DIR=MODELS_DIR,
                  llm_backend="local", ollama_host="http://127.0.0.1:9", stream_edit_interval_s=0.0)
    values["agent_in_ask"] = False  # plain questions take the plain answer path unless a test opts in to tools
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), database_url)


@pytest.fixture(scope="module")
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    context = await build_context(settings)
    yield context
    await close(context)


class TestBot:
    """Drive the router like an adapter would: `await bot.push("/help")` returns the final reply."""

    __test__ = False

    def __init__(self, router: Router):
        self.router = router
        self.replies: list[Reply] = []

    def incoming(self, text: str, **fields) -> Incoming:
        base = dict(platform="console", workspace="local", channel="test", user="tester", text=text,
                    is_admin=True, is_dm=True)
        base.update(fields)
        return Incoming(**base)

    async def stream(self, text: str, **fields) -> list[Reply]:
        out = [r async for r in self.router.dispatch(self.incoming(text, **fields))]
        self.replies += out
        return out

    async def push(self, text: str, **fields) -> Reply | None:
        out = await self.stream(text, **fields)
        return out[-1] if out else None

    def pop_reply(self) -> Reply:
        return self.replies.pop(0)


@pytest.fixture(scope="module")
def bot(ctx: Context) -> TestBot:
    return TestBot(build_router(ctx))
