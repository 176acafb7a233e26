"""A folder of md, txt, html and pdf files; one document per file.

    /sources add docs kind=folder path=docs
    /sources add handbook kind=folder path=/srv/handbook acl=channel:slack:C0HR base_url=https://wiki/hb/

Incremental by (mtime, size): unchanged files are not even opened. Unreadable files (corrupt or
encrypted PDFs, files over `max_bytes`) are skipped with the error recorded; the sync goes on.
Text beyond `max_chars` per file is dropped with a note in the document's meta.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.errors import UserError
from knowledge.sources import Connector, Found, source
from knowledge.sources.text import DEFAULT_MAX_CHARS, decode_pieces, first_heading, html_to_text, read_file_pieces
from knowledge.types import PUBLIC, SourceDocument

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".rst": "text",
            ".html": "html", ".htm": "html", ".pdf": "pdf"}
DEFAULT_MAX_BYTES = 200 * 1024 * 1024


def parse_acl(raw: Any) -> tuple[str, ...]:
    if not raw:
        return (PUBLIC,)
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    acl = tuple(sorted({a.strip() for a in items if a.strip()}))
    for principal in acl:
        if principal != PUBLIC and not principal.startswith(("channel:", "user:")):
            raise UserError(f"Bad ACL principal '{principal}': use public, channel:<platform>:<id> or "
                            "user:<platform>:<id>.")
    return acl


@source("folder")
class FolderSource(Connector):
    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not config.get("path"):
            raise UserError("A folder source needs path=DIR, e.g. /sources add docs kind=folder path=docs")
        config["acl"] = list(parse_acl(config.get("acl")))
        config["max_chars"] = int(config.get("max_chars", DEFAULT_MAX_CHARS))
        config["max_bytes"] = int(config.get("max_bytes", DEFAULT_MAX_BYTES))
        return config

    @property
    def root(self) -> Path:
        return Path(self.config["path"]).expanduser()

    def files(self) -> list[tuple[str, Path]]:
        root = self.root
        if not root.is_dir():
            raise UserError(f"Source '{self.info.name}': folder {root} does not exist (or is not a folder). "
                            f"Fix it with /sources remove {self.info.name} and add it again with the right path.")
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.suffix.lower() in SUFFIXES and not name.startswith("."):
                    found.append((path.relative_to(root).as_posix(), path))
        return found

    async def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        known = cursor.get("docs", {})
        for rel, path in await asyncio.to_thread(self.files):
            try:
                st = path.stat()
            except OSError as err:
                yield Found(rel, error=f"cannot stat: {err.strerror}")
                continue
            stamp = [st.st_mtime_ns, st.st_size]
            if known.get(rel) == stamp:
                yield Found(rel)
                continue
            if st.st_size > self.config["max_bytes"]:
                yield Found(rel, error=f"file is {st.st_size:,} bytes; the limit is {self.config['max_bytes']:,} "
                                       "(max_bytes=)")
                continue
            try:
                doc = await asyncio.to_thread(self.read, rel, path, st.st_mtime)
            except ValueError as err:  # a reason we worded ourselves
                yield Found(rel, error=str(err)[:300])
                continue
            except Exception as err:  # one bad file never stops the sync
                yield Found(rel, error=f"{type(err).__name__}: {err}"[:300])
                continue
            yield Found(rel, doc=doc, cursor={"docs": {rel: stamp}})

    def read(self, rel: str, path: Path, mtime: float) -> SourceDocument:
        kind = SUFFIXES[path.suffix.lower()]
        cap = self.config["max_chars"]
        meta: dict[str, Any] = {"path": rel, "kind": kind}
        title = None
        if kind == "pdf":
            text, truncated, pages = read_pdf(path, cap)
            meta["pages"] = pages
        elif kind == "html":
            raw, meta["encoding"], raw_cut = decode_pieces(read_file_pieces(str(path)), cap=cap * 4)
            title, text, truncated = html_to_text([raw], cap=cap)
            truncated = truncated or raw_cut
        else:
            text, meta["encoding"], truncated = decode_pieces(read_file_pieces(str(path)), cap=cap)
            if kind == "markdown":
                title = first_heading(text)
        if truncated:
            meta["note"] = f"truncated to the first {cap:,} characters"
        base = self.config.get("base_url")
        return SourceDocument(
            external_id=rel, title=title or path.stem.replace("_", " ").replace("-", " "), text=text,
            url=f"{base.rstrip('/')}/{rel}" if base else None, acl=tuple(self.config["acl"]), meta=meta,
            updated_at=datetime.fromtimestamp(mtime, UTC))


def read_pdf(path: Path, cap: int) -> tuple[str, bool, int]:
    """Text of a PDF page by page up to `cap` characters. Encrypted or corrupt: raises with a clear reason."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise ValueError("the PDF is encrypted (password-protected); decrypt it or remove it from the folder")
        parts: list[str] = []
        size = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            parts.append(text[: cap - size])
            size += len(parts[-1])
            if size >= cap:
                return "\n\n".join(parts), True, len(reader.pages)
        return "\n\n".join(parts), False, len(reader.pages)
    except ValueError:
        raise
    except Exception as err:  # pypdf raises many kinds (PdfReadError, ...) on damaged files
        raise ValueError(f"corrupt PDF: {err}") from None
