"""What every handler receives besides the message: settings, database, models, platforms.

Passed explicitly (no globals) so tests build one with fakes and handlers stay pure at heart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings

if TYPE_CHECKING:
    from bot.llm.hub import ModelHub
    from bot.messages import Platform


@dataclass
class Context:
    settings: Settings
    db: async_sessionmaker[AsyncSession]
    models: ModelHub
    platforms: dict[str, Platform] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)  # lazily built heavy objects, by name

    def service(self, name: str, factory: Any) -> Any:
        """Build a heavy object (embedder, scheduler) once, on first use."""
        if name not in self.services:
            self.services[name] = factory()
        return self.services[name]
