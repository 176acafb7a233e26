"""Database: an async SQLAlchemy engine on Postgres, embedded by default.

`DATABASE_URL` unset -> a private PostgreSQL 16 + pgvector started by `pgserver` in the data dir.
Migrations (Alembic) run on start and by `ladder db upgrade`; nothing else changes the schema.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.config import Settings
from bot.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_embedded: dict[str, object] = {}


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded Postgres in `pgdata`; returns its libpq URI."""
    key = str(pgdata)
    if key not in _embedded:
        import warnings

        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # platformdirs noise on headless boxes
        import pgserver  # heavy import, only when embedded

        pgdata.mkdir(parents=True, exist_ok=True)
        try:
            _embedded[key] = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as err:
            raise DatabaseUnavailable(f"Could not start the embedded Postgres in {pgdata}: {err}") from err
    return _embedded[key].get_uri()  # type: ignore[attr-defined]


def resolve_url(settings: Settings) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) to use: configured, or the embedded server's."""
    raw = settings.database_url.get_secret_value() if settings.database_url else start_embedded(
        settings.pg_data_dir
    )
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", raw)


def redact(url: str) -> str:
    """The URL without its password, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def make_engine(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check(engine: AsyncEngine) -> None:
    """Fail fast with a clear message (never a traceback) when the database cannot be reached."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err) else type(err).__name__
        raise DatabaseUnavailable(f"Cannot connect to the database at {redact(str(engine.url))}: {reason}") from err


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations (synchronously; call in a thread from async code)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
