"""Evaluation before and after training: response-token perplexity and fixed-prompt samples.

Perplexity = exp(mean negative log-likelihood over the RESPONSE tokens of the held-out examples):
prompt tokens are context, not scored; every response token counts once, whatever its example.

    >>> import math; perplexity_from_nll(2 * math.log(4.0), 2)
    4.0
"""

from __future__ import annotations

import math
from typing import Any


def perplexity_from_nll(nll_sum: float, tokens: int) -> float:
    if tokens <= 0:
        return float("nan")
    return math.exp(nll_sum / tokens)


def perplexity_from_logits(logits: Any, labels: Any) -> float:
    """Hand-checkable definition: logits [B, T, V] predict labels [B, T] shifted by one; -100 is not scored."""
    import torch.nn.functional as F

    targets = labels[:, 1:]
    keep = targets != -100
    nll = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="sum")
    return perplexity_from_nll(float(nll), int(keep.sum()))


def perplexity(model: Any, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> float:
    """Response-token perplexity of `model` on tokenised (ids, labels) rows, batched by length."""
    import torch

    from training.recipes.common import collate, response_nll

    if not rows:
        return float("nan")
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = collate([rows[i] for i in order[start:start + batch_size]], pad_id)
            nll, n = response_nll(model, batch)
            total += float(nll)
            count += n
    model.train(was_training)
    return perplexity_from_nll(total, count)


def generate(model: Any, tok: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers to fixed prompts (chat messages), so before/after differ only by training."""
    import torch

    from training.recipes.common import render

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for messages in prompts:
            enc = tok(render(tok, messages, True), return_tensors="pt", add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, repetition_penalty=1.1)
            out.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    model.train(was_training)
    return out


def samples_table(prompts: list[list[dict[str, str]]], before: list[str], after: list[str]) -> list[dict[str, str]]:
    return [{"prompt": p[-1]["content"], "before": b, "after": a} for p, b, a in zip(prompts, before, after,
                                                                                      strict=False)]
