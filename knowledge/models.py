"""ORM tables of `knowledge` (on the shared `bot.models.Base`); the schema changes only through migrations."""

from __future__ import annotations

from bot.models import Base  # noqa: F401
