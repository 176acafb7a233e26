"""One `Settings` object for the whole bot, read from the environment and `.env`.

Every knob has a default that works on one machine with nothing installed by hand:
no `DATABASE_URL` means an embedded Postgres in the data directory, and `LLM_BACKEND=auto`
means "Ollama if it answers, else the embedded SmolLM2".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ladder"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="LADDER_DATA_DIR")
    database_url: SecretStr | None = None
    models_dir: Path | None = Field(default=None, validation_alias="LADDER_MODELS_DIR")  # default: data_dir/models
    # Training: where jobs write checkpoints, adapters, plots (shared by the bot and the workers when possible)
    artifact_dir: Path | None = Field(default=None, validation_alias="LADDER_ARTIFACT_DIR")  # set below

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
    reranker_model: str = "ms-marco-TinyBERT-L-2-v2"  # a flashrank model name; off unless its files are present
    reranker_cache_dir: Path | None = None  # default: models dir / "flashrank"; never downloaded into
    rag_top_k: int = 6  # chunks given to the model as numbered context
    rag_min_similarity: float = 0.3  # below this cosine similarity nothing counts as found (no guessing)
    gpu_memory_gb: float | None = None  # None = detect with torch
    cpu_memory_gb: float | None = None  # None = detect

    # Messages
    max_input_chars: int = 8000  # longer messages are truncated with a notice
    stream_edit_interval_s: float = 1.0
    # Hosts model output may link to (comma-separated; subdomains included); other links and all
    # markdown images are removed before posting, so output cannot exfiltrate data by URL.
    link_allowlist: str = ""

    # Admins: comma-separated user ids (any platform) who may run admin commands
    admin_users: str = ""

    # Platforms
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_allow_bots: bool = False  # answer messages from other bots (never its own)
    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_guild_ids: str = ""
    discord_admin_role_ids: str = ""  # comma-separated Discord role ids whose members are Ladder admins
    discord_members_intent: bool = False  # privileged Server Members Intent: lets private-channel ACLs list members

    # Agent (tool calling) and MCP
    agent_in_ask: bool = True  # mentions and /ask use tools when the channel's model supports them
    agent_max_steps: int = 6  # model turns per task
    agent_max_seconds: float = 120.0  # wall time per task
    agent_max_tool_output_chars: int = 4000  # longer tool results are cut before the model sees them
    agent_confirm_ttl_s: int = 900  # a proposed side effect must be confirmed within this many seconds
    agent_timezone: str = ""  # IANA name for `now`/`remind` ("" = the server's local time zone)
    agent_http_allowlist: str = ""  # comma-separated hosts http_get may fetch and answers may link to
    agent_http_max_bytes: int = 200_000
    agent_http_timeout_s: float = 10.0
    mcp_config: Path | None = None  # YAML/JSON file listing MCP servers whose tools the agent may use
    mcp_call_timeout_s: float = 30.0
    mcp_tokens: SecretStr | None = None  # `ladder mcp --http`: "TOKEN=platform:user,TOKEN2=platform:user2"

    @model_validator(mode="after")
    def _default_artifact_dir(self) -> Settings:
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"  # default: data_dir/artifacts
        return self

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
