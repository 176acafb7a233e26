"""A BEIR-format corpus (`corpus.jsonl`: `_id`, `title`, `text`), one document per line: for evaluation.

    ladder sources add scifact kind=beir path=../shared/datasets/scifact acl=user:eval:scifact

`ladder eval retrieval` adds one of these itself, readable only by a principal of its own, so benchmark
documents never show up in the team's answers. Incremental: a document whose text is unchanged since
the cursor is not even re-chunked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.errors import UserError
from knowledge.sources import Connector, Found, source
from knowledge.sources.folder import parse_acl
from knowledge.types import SourceDocument


@source("beir")
class BeirSource(Connector):
    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not config.get("path"):
            raise UserError("A beir source needs path=DIR (the folder with corpus.jsonl).")
        config["acl"] = list(parse_acl(config.get("acl")))
        config["limit"] = int(config["limit"]) if config.get("limit") else None
        return config

    async def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        corpus = Path(self.config["path"]).expanduser() / "corpus.jsonl"
        if not corpus.is_file():
            raise UserError(f"Source '{self.info.name}': {corpus} does not exist.")
        known = cursor.get("docs") or {}
        acl = tuple(self.config["acl"])
        with corpus.open(encoding="utf-8", errors="replace") as lines:
            for n, line in enumerate(lines):
                if self.config["limit"] is not None and n >= self.config["limit"]:
                    break
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ext, title, body = str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or "")
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    yield Found(f"line-{n + 1}", error=f"not a BEIR corpus line: {err}")
                    continue
                stamp = hashlib.sha1(f"{title}\x1f{body}".encode()).hexdigest()[:16]
                if known.get(ext) == stamp:
                    yield Found(ext)
                    continue
                doc = SourceDocument(ext, title or ext, body, None, acl, {"beir_id": ext}, None)
                yield Found(ext, doc=doc, cursor={"docs": {ext: stamp}})
