"""One `Settings` object for the whole bot, read from the environment and `.env`.

Every knob has a default that works on one machine with nothing installed by hand:
no `DATABASE_URL` means an embedded Postgres in the data directory, and `LLM_BACKEND=auto`
means "Ollama if it answers, else the embedded SmolLM2".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ladder"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="LADDER_DATA_DIR")
    database_url: SecretStr | None = None
    models_dir: Path | None = Field(default=None, validation_alias="LADDER_MODELS_DIR")  # default: data_dir/models

    # Models
    llm_backend: str = "auto"  # auto | ollama | openai | local
    llm_model: str | None = None  # default model name for the chosen backend
    ollama_host: str = "http://127.0.0.1:11434"
    openai_base_url: str | None = None  # LM Studio, TGI, vLLM, llama.cpp server
    openai_api_key: SecretStr | None = None
    llm_timeout_s: float = 120.0
    max_answer_tokens: int = 512
    local_max_context: int = 2048  # the embedded model's window as used by Ladder (CPU-friendly)
    embedding_model: str | None = None  # path or name; None = packaged all-MiniLM-L6-v2
    gpu_memory_gb: float | None = None  # None = detect with torch
    cpu_memory_gb: float | None = None  # None = detect

    # Messages
    max_input_chars: int = 8000  # longer messages are truncated with a notice
    stream_edit_interval_s: float = 1.0

    # Admins: comma-separated user ids (any platform) who may run admin commands
    admin_users: str = ""

    # Platforms
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_guild_ids: str = ""

    @property
    def admins(self) -> set[str]:
        return {u.strip() for u in self.admin_users.split(",") if u.strip()}

    @property
    def model_cache_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "pgdata"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
