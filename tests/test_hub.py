"""Backend selection: configured, else Ollama if it answers, else the embedded model."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.llm.hub import ModelHub
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI


def settings(**values) -> Settings:
    return Settings(_env_file=None, LADDER_DATA_DIR=Path("/tmp/ladder-hub-test"), **values)


async def test_auto_prefers_ollama_when_it_answers():
    async with FakeOllama() as fake:
        fake.add_model("llama3.1:8b")
        hub = ModelHub.from_settings(settings(ollama_host=fake.url))
        assert (await hub.active()).name == "ollama"
        model = await hub.model_for()
        assert (model.backend, model.name) == ("ollama", "llama3.1:8b")


async def test_auto_falls_back_to_embedded_when_ollama_is_down():
    hub = ModelHub.from_settings(settings(ollama_host="http://127.0.0.1:9"))
    assert (await hub.active()).name == "local"
    assert (await hub.model_for()).name == "smollm2:135m-instruct"


async def test_openai_compatible_server_when_configured():
    async with FakeOpenAI(api_key="sk-test") as fake:
        fake.add_model("qwen2.5-7b-instruct")
        hub = ModelHub.from_settings(settings(openai_base_url=f"{fake.url}/v1", openai_api_key="sk-test",
                                              ollama_host="http://127.0.0.1:9"))
        model = await hub.model_for()
        assert (model.backend, model.name) == ("openai", "qwen2.5-7b-instruct")
        result = await model.chat([])
        assert result.backend == "openai"


async def test_channel_choice_overrides_the_default():
    async with FakeOllama() as fake:
        fake.add_model("llama3.1:8b")
        hub = ModelHub.from_settings(settings(ollama_host=fake.url))
        model = await hub.model_for("smollm2:135m-instruct", "local")
        assert model.backend == "local"
