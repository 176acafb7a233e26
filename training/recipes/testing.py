"""An in-memory `RunContext` for tests and for running a recipe by hand (the worker has the real one).

    ctx = LocalRunContext(config=validate("lora", {"base": "tiny-llama", "data": path, "steps": "5"}),
                          workdir=tmp_path)
    metrics = get("lora").run(ctx)
    ctx.events  # [("progress", {...}), ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LocalRunContext:
    config: Any
    workdir: Path
    job_id: int = 0
    device: str = "cpu"
    resume_from: Path | None = None
    database_url: str | None = None
    stop_when: Callable[[LocalRunContext], bool] = lambda ctx: False
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    artifacts: list[tuple[str, Path, dict[str, Any]]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    def emit(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))

    def artifact(self, kind: str, path: Path, **meta: Any) -> None:
        self.artifacts.append((kind, path, meta))

    def should_stop(self) -> bool:
        return self.stop_when(self)

    def checkpoint(self, path: Path) -> None:
        self.checkpoints.append(path)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]
