"""Text extraction shared by connectors: bounded streaming decode with an encoding fallback, HTML -> text.

Everything reads in pieces and stops at a character cap, so a 50 MB file never sits in memory whole.

    >>> html_to_text(["<h1>Intro</h1><p>Hello <b>there</b></p><script>x()</script>"], cap=1000)
    ('Intro', '# Intro\\n\\nHello there', False)
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

PIECE = 1 << 16  # bytes read at a time
DEFAULT_MAX_CHARS = 1_000_000  # per document; the rest is dropped with a note


def sniff_encoding(head: bytes) -> str:
    """BOMs first, then strict UTF-8 on the head, then cp1252 (Windows), then latin-1 (never fails)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for enc in ("utf-8", "cp1252"):
        try:
            codecs.getincrementaldecoder(enc)("strict").decode(head, final=False)
            return enc
        except UnicodeDecodeError:
            continue
    return "latin-1"


def decode_pieces(pieces: Iterable[bytes], *, cap: int) -> tuple[str, str, bool]:
    """Decode byte pieces up to `cap` characters: (text, encoding used, truncated?)."""
    out: list[str] = []
    size = 0
    decoder = None
    encoding = "utf-8"
    truncated = False
    for piece in pieces:
        if decoder is None:
            encoding = sniff_encoding(piece)
            decoder = codecs.getincrementaldecoder(encoding)("replace")
        text = decoder.decode(piece)
        if size + len(text) > cap:
            out.append(text[: cap - size])
            truncated = True
            break
        out.append(text)
        size += len(text)
    else:
        if decoder is not None:
            out.append(decoder.decode(b"", final=True))
    return "".join(out).replace("\r\n", "\n").replace("\x00", ""), encoding, truncated


def read_file_pieces(path: str, piece: int = PIECE) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(piece):
            yield chunk


_BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table", "ul", "ol", "dd", "dt"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head"}


class _TextParser(HTMLParser):
    """Collects visible text; headings become markdown `#` lines so chunking keeps the heading path."""

    def __init__(self, cap: int):
        super().__init__(convert_charrefs=True)
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.skip = 0
        self.title: list[str] = []
        self.in_title = False
        self.heading: str | None = None
        self.truncated = False

    def _add(self, text: str) -> None:
        if self.size + len(text) > self.cap:
            text = text[: self.cap - self.size]
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.heading = tag
            self._add("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in _BLOCK:
            self._add("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == self.heading:
            self.heading = None
            self._add("\n\n")
        elif tag in _BLOCK:
            self._add("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip and not self.truncated:
            self._add(data.replace("\n", " ") if self.heading else data)


def html_to_text(pieces: Iterable[str], *, cap: int) -> tuple[str, str, bool]:
    """(title, text, truncated) from HTML fed in pieces; stops feeding once `cap` characters are collected."""
    parser = _TextParser(cap)
    for piece in pieces:
        parser.feed(piece)
        if parser.truncated:
            break
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = " ".join("".join(parser.title).split()) or first_heading(text) or ""
    return title, text, parser.truncated


def first_heading(text: str) -> str | None:
    match = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", text[:20_000], re.M)
    return match.group(1).strip() if match else None
