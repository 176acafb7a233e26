"""/explain, /tokenize and /similar with the real embedded tokenizer and embedding model."""

from __future__ import annotations

import pytest


async def test_explain_known_terms_and_aliases(bot):
    assert "Low-Rank Adaptation" in (await bot.push("/explain LoRA")).text
    assert "4-bit" in (await bot.push("/explain qlora")).text
    for term in ("inference", "pretraining", "fine-tuning", "parameters", "quantization", "perplexity",
                 "embeddings", "tokenization", "context window", "distillation", "rag", "agentic ai", "mcp"):
        reply = await bot.push(f"/explain {term}")
        assert not reply.error and len(reply.text) > 80, term


async def test_explain_unknown_term_suggests(bot):
    reply = await bot.push("/explain quantisaton")
    assert reply.error and "Did you mean 'quantization'?" in reply.text


async def test_tokenize_with_the_embedded_tokenizer(bot):
    reply = await bot.push("/tokenize Hello world")
    assert reply.text.startswith("2 tokens for 11 characters")
    assert "`Hello`=" in reply.text and "world" in reply.text
    assert (await bot.push("/tokenize")).error


async def test_similar_scores_related_texts_higher(bot):
    def score(reply):
        return float(reply.text.split("Cosine similarity: ")[1].split(" ")[0])

    close = score(await bot.push("/similar The deploy failed last night | Last night's release broke"))
    far = score(await bot.push("/similar The deploy failed last night | I like strawberry jam"))
    assert close > far + 0.2
    assert (await bot.push("/similar only one text")).error


@pytest.mark.parametrize("question", ["Say hello in one word."])
async def test_local_model_streams(ctx, question):
    from bot.llm.base import ChatMessage

    model = await ctx.models.model_for()
    chunks = [c async for c in model.stream([ChatMessage("user", question)], max_tokens=12)]
    assert chunks[-1].done and chunks[-1].result.backend == "local"
    assert len(chunks) >= 3 and chunks[-1].result.usage.completion_tokens > 0
