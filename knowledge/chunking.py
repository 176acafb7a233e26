"""Token-aware recursive splitting with overlap; every chunk keeps its title/heading path. Pure.

The document is cut into sections at markdown headings (HTML headings arrive as `#` lines too); each
section is split at the coarsest separator that makes pieces fit (paragraph, line, sentence, word,
characters), and pieces are packed into chunks of at most `max_tokens` (heading included), each new chunk
starting with the last `overlap` tokens' worth of pieces of the one before.

    >>> doc = SourceDocument("a.md", "Guide", "# Install\\nRun pip install ladder.\\n\\n## Linux\\nUse apt.")
    >>> [c.heading for c in chunk_document(doc, max_tokens=64, overlap=8, count_tokens=lambda s: len(s.split()))]
    ['Guide > Install', 'Guide > Install > Linux']
"""

from __future__ import annotations

import re
from collections.abc import Callable

from knowledge.types import ChunkIn, SourceDocument

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 32
SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")
CHUNKER_VERSION = 1
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

Counter = Callable[[str], int]


def signature(max_tokens: int, overlap: int) -> str:
    """Identifies the chunking output; stored with documents so a change re-chunks them."""
    return f"v{CHUNKER_VERSION}:{max_tokens}:{overlap}"


def sections(title: str, text: str) -> list[tuple[str, str]]:
    """(heading path, body) per markdown section; headings inside code fences are not headings."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        joined = "\n".join(body).strip()
        names = [h for _, h in path]
        if names and names[0] == title:  # a leading "# Title" repeats the title
            names = names[1:]
        if joined:
            out.append((" > ".join([title, *names] if title else names), joined))
        body.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, match.group(2))]
        else:
            body.append(line)
    flush()
    return out


def split_text(text: str, budget: int, count: Counter,
               separators: tuple[str, ...] = SEPARATORS) -> list[tuple[str, int]]:
    """Pieces of `text` (with their token counts) each within `budget`, cut at the coarsest separator possible."""
    n = count(text)
    if n <= budget:
        return [(text, n)] if text.strip() else []
    for i, sep in enumerate(separators):
        if sep in text:
            parts = text.split(sep)
            pieces = [p + sep for p in parts[:-1]] + [parts[-1]]
            out: list[tuple[str, int]] = []
            for piece in pieces:
                out += split_text(piece, budget, count, separators[i + 1:])
            return out
    # no separator left: cut characters proportionally
    step = max(1, len(text) * budget // max(n, 1))
    return [(text[i:i + step], count(text[i:i + step])) for i in range(0, len(text), step) if text[i:i + step].strip()]


def pack(pieces: list[tuple[str, int]], budget: int, overlap: int) -> list[tuple[str, int]]:
    """Greedy packing into chunks of <= budget tokens; each chunk opens with the tail of the previous one."""
    chunks: list[tuple[str, int]] = []
    current: list[tuple[str, int]] = []
    size = 0
    for piece in pieces:
        if current and size + piece[1] > budget:
            chunks.append(("".join(p for p, _ in current).strip(), size))
            tail: list[tuple[str, int]] = []
            tail_size = 0
            for p in reversed(current):
                if tail_size + p[1] > overlap or tail_size + p[1] + piece[1] > budget:
                    break
                tail.insert(0, p)
                tail_size += p[1]
            current, size = tail, tail_size
        current.append(piece)
        size += piece[1]
    if current and "".join(p for p, _ in current).strip():
        chunks.append(("".join(p for p, _ in current).strip(), size))
    return chunks


def chunk_document(doc: SourceDocument, *, max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP,
                   count_tokens: Counter) -> list[ChunkIn]:
    """Chunks of `doc` of at most ~`max_tokens` tokens counting the heading path embedded with them."""
    if overlap >= max_tokens:
        raise ValueError(f"overlap ({overlap}) must be smaller than max_tokens ({max_tokens})")
    out: list[ChunkIn] = []
    for heading, body in sections(doc.title.strip(), doc.text):
        budget = max(max_tokens - count_tokens(heading) - 1, max_tokens // 4)
        for text, tokens in pack(split_text(body, budget, count_tokens), budget, overlap):
            if text:
                out.append(ChunkIn(ord=len(out), heading=heading, text=text, tokens=tokens))
    if not out and doc.title.strip():  # an empty document is still findable by its title
        out.append(ChunkIn(ord=0, heading=doc.title.strip(), text=doc.title.strip(), tokens=count_tokens(doc.title)))
    return out
