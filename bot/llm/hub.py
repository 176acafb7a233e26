"""Which backend and model answers: configured, else Ollama if it answers, else the embedded model.

    hub = ModelHub.from_settings(settings)
    model = await hub.model_for(channel_model="llama3.1:8b", channel_backend="ollama")
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.config import Settings
from bot.errors import ModelUnavailable, UserError
from bot.llm.base import Backend, ChatModel, ModelInfo
from bot.llm.local import LocalBackend

log = logging.getLogger(__name__)
BACKENDS = ("ollama", "openai", "local")


class ModelHub:
    def __init__(self, settings: Settings, backends: dict[str, Backend]):
        self.settings = settings
        self.backends = backends
        self._active: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelHub:
        from bot.llm.ollama import OllamaBackend
        from bot.llm.openai_compat import OpenAICompatBackend

        backends: dict[str, Backend] = {
            "local": LocalBackend(settings.model_cache_dir, context_length=settings.local_max_context,
                                  max_tokens=settings.max_answer_tokens),
            "ollama": OllamaBackend(settings.ollama_host, timeout=settings.llm_timeout_s,
                                    default_model=settings.llm_model),
        }
        if settings.openai_base_url:
            key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            backends["openai"] = OpenAICompatBackend(settings.openai_base_url, api_key=key,
                                                     timeout=settings.llm_timeout_s,
                                                     default_model=settings.llm_model)
        return cls(settings, backends)

    async def active(self) -> Backend:
        """The default backend, decided once per process (auto: Ollama if it answers)."""
        if self._active is None:
            choice = self.settings.llm_backend
            if choice == "auto":
                choice = "local"
                if "openai" in self.backends:
                    choice = "openai"
                elif await self.backends["ollama"].ping():
                    choice = "ollama"
            if choice not in self.backends:
                raise UserError(f"Backend '{choice}' is not configured. Use one of: {', '.join(self.backends)}.")
            self._active = choice
            log.info("model backend: %s", self.backends[choice].describe())
        return self.backends[self._active]

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            raise UserError(f"Unknown backend '{name}'. Configured: {', '.join(self.backends)}.")
        return self.backends[name]

    async def model_for(self, channel_model: str | None = None, channel_backend: str | None = None) -> ChatModel:
        """The model to answer with: the channel's choice if any, else the active backend's default."""
        backend = self.backend(channel_backend) if channel_backend else await self.active()
        name = channel_model or (self.settings.llm_model if backend.name != "local" else None)
        if name is None:
            resolve = getattr(backend, "resolve_default_model", None)
            name = await resolve() if resolve else backend.default_model
        if not name:
            raise ModelUnavailable(f"The {backend.name} backend has no models. Pull one with /models pull NAME.")
        return backend.model(name)

    async def find(self, name: str) -> tuple[Backend, ModelInfo]:
        """Locate a model by name on the active backend first, then the others that answer."""
        active = await self.active()
        ordered = [active] + [b for b in self.backends.values() if b is not active]
        available: list[str] = []
        for backend in ordered:
            try:
                models = await backend.list_models()
            except ModelUnavailable:
                continue
            for info in models:
                if info.name == name or (":" not in name and info.name == f"{name}:latest"):
                    return backend, info
            available += [m.name for m in models]
        listing = ", ".join(available[:20]) or "none"
        raise UserError(f"Model '{name}' is not available. Available: {listing}. "
                        f"Download one with /models pull NAME.")

    def register_local(self, name: str, base: Path, adapter: Path | None) -> None:
        """Make a deployed local fine-tune answerable by name."""
        local = self.backends["local"]
        assert isinstance(local, LocalBackend)
        local.extra[name] = (base, adapter)
