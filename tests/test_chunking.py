"""Chunking: token budgets, overlap, heading paths — pure, with a word counter and the real tokenizer."""

from __future__ import annotations

import pytest

from knowledge.chunking import chunk_document, sections, signature
from knowledge.embedding import Embedder
from knowledge.types import SourceDocument


def words(text: str) -> int:
    return len(text.split())


def test_heading_path_is_kept_with_each_chunk():
    text = ("# Guide\nintro words\n\n## Install\nstep one\n\n### Linux\napt get\n\n"
            "## Use\nrun it\n```\n# not a heading\n```")
    got = [(h, b.split("\n")[0]) for h, b in sections("Guide", text)]
    assert got == [("Guide", "intro words"), ("Guide > Install", "step one"),
                   ("Guide > Install > Linux", "apt get"), ("Guide > Use", "run it")]
    chunks = chunk_document(SourceDocument("g.md", "Guide", text), max_tokens=50, overlap=5, count_tokens=words)
    assert [c.heading for c in chunks] == ["Guide", "Guide > Install", "Guide > Install > Linux", "Guide > Use"]
    assert "# not a heading" in chunks[-1].text
    assert [c.ord for c in chunks] == [0, 1, 2, 3]
    assert chunks[2].embed_text == "Guide > Install > Linux\napt get"


def test_chunks_fit_the_budget_and_overlap():
    sentences = [f"Sentence number {i} talks about topic {i % 7}." for i in range(200)]
    doc = SourceDocument("t.txt", "T", " ".join(sentences))
    chunks = chunk_document(doc, max_tokens=40, overlap=10, count_tokens=words)
    assert len(chunks) > 5
    for c in chunks:
        assert words(c.heading) + words(c.text) <= 41
    for a, b in zip(chunks, chunks[1:], strict=False):
        first_of_b = b.text.split(".")[0]
        assert first_of_b in a.text  # b starts with the tail of a
    all_text = " ".join(c.text for c in chunks)
    assert all(s.rstrip(".") in all_text for s in sentences)  # nothing lost


def test_no_overlap_and_unsplittable_text():
    doc = SourceDocument("x", "", "x" * 5000)
    chunks = chunk_document(doc, max_tokens=10, overlap=0, count_tokens=lambda s: len(s) // 100 + 1)
    assert "".join(c.text for c in chunks) == "x" * 5000
    assert all(c.tokens <= 10 for c in chunks)
    with pytest.raises(ValueError):
        chunk_document(doc, max_tokens=10, overlap=10, count_tokens=words)


def test_empty_document_keeps_its_title_and_signature_changes_with_params():
    chunks = chunk_document(SourceDocument("e", "Empty page", "   "), max_tokens=20, overlap=2, count_tokens=words)
    assert [c.text for c in chunks] == ["Empty page"]
    assert signature(200, 32) != signature(200, 16)


def test_real_tokenizer_budget():
    emb = Embedder.default()
    text = "\n\n".join(f"Paragraph {i}: " + "retrieval augmented generation with citations " * 12 for i in range(10))
    chunks = chunk_document(SourceDocument("p.md", "Doc", text), max_tokens=64, overlap=16,
                            count_tokens=emb.count_tokens)
    assert len(chunks) >= 10
    assert all(emb.count_tokens(c.embed_text) <= 64 + 4 for c in chunks)
