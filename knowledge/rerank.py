"""Optional cross-encoder rerank with flashrank, on only when its model files are already on disk.

flashrank downloads a missing model from the hub; Ladder never lets it: the reranker is on when
`<reranker_cache_dir>/<reranker_model>/` holds the ONNX file and tokenizer files, and off otherwise,
which `/sources status` says (`reranker_status`).

    reranker = get_reranker(ctx)          # None when off
    hits = await search(session, q, audience, embedder=emb, reranker=reranker)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.config import Settings
from knowledge.retrieve import Hit

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def cache_dir(settings: Settings) -> Path:
    return settings.reranker_cache_dir or settings.model_cache_dir / "flashrank"


def missing_files(settings: Settings) -> list[str]:
    """What is missing for the configured model ([] = ready); an unknown model name is reported too."""
    from flashrank.Config import model_file_map

    name = settings.reranker_model
    if name not in model_file_map:
        return [f"(unknown flashrank model '{name}'; known: {', '.join(sorted(model_file_map))})"]
    folder = cache_dir(settings) / name
    return [f for f in (model_file_map[name], *TOKENIZER_FILES) if not (folder / f).is_file()]


def reranker_status(settings: Settings) -> str:
    """One line for `/sources status`."""
    missing = missing_files(settings)
    folder = cache_dir(settings) / settings.reranker_model
    if not missing:
        return f"reranker: on ({settings.reranker_model} from {folder})"
    return (f"reranker: off (model files not found in {folder}: missing {', '.join(missing)}; "
            "copy flashrank's model folder there to turn it on)")


class FlashReranker:
    """flashrank's pairwise cross-encoder; scores replace the hits' scores, best first."""

    def __init__(self, model: str, folder: Path, max_length: int = 256):
        from flashrank import Ranker

        self.model = model
        self.ranker = Ranker(model_name=model, cache_dir=str(folder), max_length=max_length, log_level="WARNING")
        self._lock = threading.Lock()  # one ONNX session; calls come from worker threads

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        from flashrank import RerankRequest

        passages: list[dict[str, Any]] = [{"id": i, "text": f"{h.heading}\n{h.text}" if h.heading else h.text}
                                          for i, h in enumerate(hits)]
        with self._lock:
            ranked = self.ranker.rerank(RerankRequest(query=query, passages=passages))
        return [replace(hits[int(p["id"])], score=float(p["score"])) for p in ranked]


def load_reranker(settings: Settings) -> FlashReranker | None:
    if missing_files(settings):
        return None
    try:
        return FlashReranker(settings.reranker_model, cache_dir(settings))
    except Exception as err:  # a broken model file: say so in the log, answer without rerank
        log.error("reranker %s could not be loaded: %s", settings.reranker_model, err)
        return None


def get_reranker(ctx: Any) -> FlashReranker | None:
    """The process's reranker (service "reranker"), or None when off."""
    return ctx.service("reranker", lambda: load_reranker(ctx.settings))
