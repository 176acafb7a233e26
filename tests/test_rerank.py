"""flashrank rerank: off (and said so) without model files; with a tiny cross-encoder built here in
flashrank's file layout, it reorders hits by the model's own scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from knowledge.acl import Audience
from knowledge.rerank import FlashReranker, cache_dir, load_reranker, reranker_status
from knowledge.retrieve import Hit, Tuning, search
from knowledge.termstats import refresh_term_stats
from tests.conftest import make_settings
from tests.kb_rows import add_document, add_source, unit_vectors

NAME = "ms-marco-TinyBERT-L-2-v2"
WORDS = "the a of to and in is vpn password reset rotate key api office holiday policy tunnel lunch".split()


def build_tiny_cross_encoder(root: Path) -> Path:
    """A randomly initialised 1-layer BERT cross-encoder exported to ONNX, with a WordPiece tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification

    out = root / NAME
    out.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=1, pad_token_id=0)
    bert = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    ids = torch.tensor([[2, 5, 3, 6, 3]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(Logits(), (ids, torch.ones_like(ids), torch.tensor([[0, 0, 0, 1, 1]])),
                      str(out / "flashrank-TinyBERT-L-2-v2.onnx"), input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names}, dynamo=False)
    (out / "config.json").write_text(json.dumps({"pad_token_id": 0}))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "pad_token": "[PAD]"}))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"}))
    return out


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flashrank")
    build_tiny_cross_encoder(root)
    return root


def expected_score(folder: Path, query: str, passage: str) -> float:
    """The model's score computed here, one pair at a time, without flashrank."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(query, passage)
    session = ort.InferenceSession(str(folder / "flashrank-TinyBERT-L-2-v2.onnx"))
    feed = {"input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
    logit = float(session.run(None, feed)[0][0][0])
    return 1 / (1 + np.exp(-logit))


def hit(i: int, body: str) -> Hit:
    return Hit(chunk_id=i, document_id=i, title=f"t{i}", url=None, heading="", text=body, score=1.0 / i,
               source="s", similarity=0.5)


def test_without_model_files_the_reranker_is_off_and_says_where_it_looked(tmp_path, database_url):
    settings = make_settings(tmp_path, database_url, reranker_cache_dir=tmp_path / "empty")
    status = reranker_status(settings)
    assert status.startswith("reranker: off") and str(tmp_path / "empty" / NAME) in status
    assert load_reranker(settings) is None
    unknown = make_settings(tmp_path, database_url, reranker_model="no-such-model")
    assert "unknown flashrank model" in reranker_status(unknown) and load_reranker(unknown) is None


def test_tiny_model_in_flashrank_layout_reranks_by_its_own_scores(model_root, tmp_path, database_url):
    settings = make_settings(tmp_path, database_url, reranker_cache_dir=model_root)
    assert reranker_status(settings).startswith("reranker: on") and cache_dir(settings) == model_root
    reranker = load_reranker(settings)
    assert isinstance(reranker, FlashReranker)
    query = "reset the vpn password"
    hits = [hit(1, "holiday policy of the office"), hit(2, "reset vpn password"), hit(3, "rotate the api key"),
            hit(4, "lunch in the office")]
    ranked = reranker.rerank(query, hits)
    want = {h.chunk_id: expected_score(model_root / NAME, query, h.text) for h in hits}
    assert sorted(h.chunk_id for h in ranked) == [1, 2, 3, 4]
    assert [h.score for h in ranked] == pytest.approx([want[h.chunk_id] for h in ranked], abs=1e-4)
    assert [h.score for h in ranked] == sorted((h.score for h in ranked), reverse=True)


def test_a_corrupt_model_file_turns_rerank_off_instead_of_failing(tmp_path, database_url, caplog):
    root = tmp_path / "bad"
    build_tiny_cross_encoder(root)
    (root / NAME / "flashrank-TinyBERT-L-2-v2.onnx").write_bytes(b"not onnx")
    with caplog.at_level(logging.ERROR):
        assert load_reranker(make_settings(tmp_path, database_url, reranker_cache_dir=root)) is None
    assert "could not be loaded" in caplog.text


async def test_search_reranks_the_head_and_keeps_the_tail(ctx, model_root, tmp_path, database_url):
    reranker = load_reranker(make_settings(tmp_path, database_url, reranker_cache_dir=model_root))
    bodies = ["vpn password reset office", "vpn password", "vpn tunnel reset", "vpn holiday policy", "vpn lunch"]
    async with ctx.db() as session, session.begin():
        sid = await add_source(session, "rr")
        for i, body in enumerate(bodies):
            await add_document(session, sid, f"d{i}", f"Doc {i}", [body], unit_vectors(1, seed=i), ["public"])
        await refresh_term_stats(session)
    async with ctx.db() as session:
        plain = await search(session, "vpn password reset", Audience(("public",)), k=5, mode="fulltext")
        reranked = await search(session, "vpn password reset", Audience(("public",)), k=5, mode="fulltext",
                                reranker=reranker, tuning=Tuning(rerank_depth=3))
        assert await search(session, "vpn password reset", Audience(("public",)), k=5, mode="fulltext",
                            reranker=reranker, rerank=False) == plain
        n = (await session.execute(text("SELECT count(*) FROM chunks"))).scalar_one()
    assert n == 5
    head = reranker.rerank("vpn password reset", plain[:3])
    assert [h.chunk_id for h in reranked[:3]] == [h.chunk_id for h in head]
    assert [h.chunk_id for h in reranked[3:]] == [h.chunk_id for h in plain[3:]]
