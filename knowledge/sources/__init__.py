"""Connectors: each kind of source is one module here, registered with `@source(kind)`.

A connector reads its source and yields one `Found` per document it knows of. Unchanged documents
(per the cursor) are yielded without text, so the sync knows they still exist and costs nothing for them.

    @source("folder")
    class FolderSource(Connector):
        @classmethod
        def check_config(cls, config): ...          # raise UserError for bad config
        async def scan(self, cursor):               # yield Found(...) for every document
            yield Found("notes.md", doc=SourceDocument("notes.md", "Notes", "..."), cursor={"docs": {...}})
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.errors import UserError
from knowledge.types import SourceDocument

_REGISTRY: dict[str, type[Connector]] = {}


@dataclass
class Found:
    """One document the source has now.

    `doc` None and `error` None: unchanged since the cursor (nothing read). `error`: could not be read;
    skipped and recorded. `cursor`: merged (deeply) into the source's cursor once this item's batch commits.
    By convention `cursor["docs"]` maps external_id -> a change stamp; the sync prunes ids that are gone.
    """

    external_id: str
    doc: SourceDocument | None = None
    error: str | None = None
    cursor: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceInfo:
    """What a connector may know about the source row it syncs."""

    name: str
    platform: str = "console"
    workspace: str = "local"


class Connector:
    """Base of all connectors. `lists_all`: a scan yields every current document, so others are deleted."""

    kind: ClassVar[str] = ""
    lists_all: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any], info: SourceInfo, services: dict[str, Any] | None = None):
        self.config = self.check_config(dict(config))
        self.info = info
        self.services = services or {}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise the config given to `/sources add`; raise UserError with a fix."""
        return config

    def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        raise NotImplementedError


def source(kind: str) -> Callable[[type[Connector]], type[Connector]]:
    """Register a connector class for `/sources add NAME kind=KIND ...`. A duplicate kind fails at import."""

    def register(cls: type[Connector]) -> type[Connector]:
        if kind in _REGISTRY:
            raise RuntimeError(f"source kind {kind!r} registered twice: {_REGISTRY[kind]} and {cls}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return register


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "text":
            importlib.import_module(f"{__name__}.{module.name}")


def kinds() -> list[str]:
    load_all()
    return sorted(_REGISTRY)


def connector_class(kind: str) -> type[Connector]:
    load_all()
    if kind not in _REGISTRY:
        raise UserError(f"Unknown source kind '{kind}'. Use one of: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[kind]


def make_connector(kind: str, config: dict[str, Any], info: SourceInfo,
                   services: dict[str, Any] | None = None) -> Connector:
    return connector_class(kind)(config, info, services)
