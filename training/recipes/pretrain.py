"""`/train pretrain data=kb steps=2000`: a tokenizer and a small Llama trained from scratch, nanoGPT-shaped.

The corpus (knowledge-base documents, a .txt file or text records) becomes one token stream: a
byte-level BPE trained with `tokenizers` (or one token per character, `tokenizer=char`); the first
90% trains, the last 10% validates. Random block_size windows, AdamW, warm-up + cosine decay,
`eval_every` steps an estimate of train/val loss over `eval_iters` batches, one checkpoint dict.
The result loads with `AutoModelForCausalLM` / `AutoTokenizer`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.recipes import recipe
from training.recipes.base import RunContext, opt


@dataclass
class PretrainConfig:
    data: str = opt("kb", help="kb[:SOURCE], a .txt file, or a JSONL/JSON file of text records")
    tokenizer: str = opt("bpe", choices=("bpe", "char"))
    vocab_size: int = opt(2048, min=64, max=262_144)
    n_layer: int = opt(4, min=1, max=128)
    n_head: int = opt(4, min=1, max=128)
    n_embd: int = opt(128, min=16, max=16_384)
    intermediate: int = opt(0, min=0, max=65_536, help="MLP width; 0 = 8/3 x n_embd (same params as a 4x GELU MLP)")
    block_size: int = opt(64, min=8, max=8192)
    batch_size: int = opt(12, min=1, max=4096)
    steps: int = opt(2000, min=1, max=10_000_000)
    lr: float = opt(1e-3, min=1e-7, max=1.0)
    min_lr: float = opt(1e-4, min=0.0, max=1.0)
    warmup_steps: int = opt(100, min=0, max=1_000_000)
    weight_decay: float = opt(0.1, min=0.0, max=1.0)
    beta2: float = opt(0.99, min=0.5, max=0.99999)
    grad_clip: float = opt(1.0, min=0.0, max=100.0)
    eval_every: int = opt(250, min=0, max=1_000_000)
    eval_iters: int = opt(20, min=1, max=10_000)
    val_fraction: float = opt(0.1, min=0.01, max=0.5)
    checkpoint_every: int = opt(500, min=0, max=1_000_000)
    log_every: int = opt(50, min=1, max=100_000)
    seed: int = opt(1337, min=0, max=2**31 - 1)
    threads: int = opt(0, min=0, max=512)
    init_from: str = opt("scratch", choices=("scratch", "resume"))
    sample_tokens: int = opt(200, min=0, max=10_000)

    def validate(self, check_files: bool = True) -> None:
        from bot.errors import UserError

        if self.n_embd % self.n_head:
            raise UserError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}.")
        if self.tokenizer == "bpe" and self.vocab_size < 260:
            raise UserError(f"vocab_size={self.vocab_size} is too small for byte-level BPE: use at least 260 "
                            "(256 bytes + special tokens), or tokenizer=char.")
        if check_files:
            from training.data import check_source

            check_source(self.data, "text")


def pretrain_memory_gb(config: Any) -> float:
    params = 12 * config.n_layer * config.n_embd ** 2 + config.vocab_size * config.n_embd
    acts = config.batch_size * config.block_size * config.n_embd * config.n_layer * 40 / 1e9
    return round(params * 16 / 1e9 + acts + 0.5, 2)


def corpus(ctx: RunContext, config: Any) -> str:
    from training import data

    texts = data.load(config.data, "text", database_url=getattr(ctx, "database_url", None)
                      or os.environ.get("DATABASE_URL"))
    return "\n\n".join(texts)


def char_tokenizer(text: str, path: Path) -> tuple[Any, dict[str, int]]:
    """One token per character of the corpus, saved as a fast tokenizer that decodes without spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="\n", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(path)
    return fast, vocab


def encode(text: str, config: Any, path: Path) -> tuple[Any, Any]:
    import torch

    from training.recipes.common import train_bpe

    if config.tokenizer == "char":
        tok, vocab = char_tokenizer(text, path)
        ids = [vocab[c] for c in text]
    else:
        tok = train_bpe([text[i:i + 10_000] for i in range(0, len(text), 10_000)], config.vocab_size, path,
                        chat_template=None)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    return tok, torch.tensor(ids, dtype=torch.long)


def build_model(config: Any, tok: Any) -> Any:
    from transformers import LlamaForCausalLM

    from training.recipes.common import llama_config

    width = config.intermediate or int(math.ceil(8 * config.n_embd / 3 / 32) * 32)
    cfg = llama_config(len(tok), layers=config.n_layer, hidden=config.n_embd, heads=config.n_head,
                       kv_heads=config.n_head, intermediate=width, context=max(config.block_size, 256), tokenizer=tok)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def lr_at(step: int, config: Any) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    ratio = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (config.lr - config.min_lr)


@recipe("pretrain", config=PretrainConfig, memory=pretrain_memory_gb, help="tokenizer + small Llama from scratch")
def run(ctx: RunContext) -> dict[str, Any]:
    """Pretrain from scratch; reports train/val loss, val perplexity, tokens/s and a sample."""
    import torch
    import torch.nn.functional as F

    from training import report
    from training.export import write_deploy_info
    from training.recipes.common import seed_all, set_threads
    from training.recipes.loop import load_checkpoint, save_checkpoint

    config = ctx.config
    threads = set_threads(config.threads)
    seed_all(config.seed)
    out = ctx.workdir / "model"
    tok, ids = encode(corpus(ctx, config), config, out)
    n_val = max(config.block_size + 2, int(len(ids) * config.val_fraction))
    if len(ids) - n_val <= config.block_size + 1:
        from bot.errors import UserError

        raise UserError(f"The corpus is too small: {len(ids)} tokens for block_size={config.block_size}.")
    splits = {"train": ids[:-n_val], "val": ids[-n_val:]}
    model = build_model(config, tok)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
                                  betas=(0.9, config.beta2), fused=True)
    gen = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"step": 0, "history": [], "evals": [], "best_val_loss": float("inf")}
    if ctx.resume_from is not None or config.init_from == "resume":
        path = ctx.resume_from or ctx.workdir / "ckpt.pt"
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])

    def batch(split: str) -> tuple[Any, Any]:
        data = splits[split]
        starts = torch.randint(len(data) - config.block_size - 1, (config.batch_size,), generator=gen)
        rows = torch.stack([data[s:s + config.block_size + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def loss_of(x: Any, y: Any) -> Any:
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    @torch.no_grad()
    def estimate() -> dict[str, float]:
        model.eval()
        out = {s: sum(float(loss_of(*batch(s))) for _ in range(config.eval_iters)) / config.eval_iters
               for s in ("train", "val")}
        model.train()
        return out

    def checkpoint() -> None:
        state.update(model=model.state_dict(), optimizer=optimizer.state_dict(), rng=gen.get_state(),
                     config=asdict(config))
        save_checkpoint(ctx.workdir / "ckpt.pt", state)
        ctx.checkpoint(ctx.workdir / "ckpt.pt")

    model.train()
    started, first, tokens = time.perf_counter(), state["step"], 0
    for step in range(state["step"], config.steps):
        if config.eval_every and step % config.eval_every == 0:
            losses = estimate()
            state["evals"].append({"step": step, **{f"{k}_loss": v for k, v in losses.items()}, "loss": losses["val"]})
            state["best_val_loss"] = min(state["best_val_loss"], losses["val"])
            ctx.emit("metric", name="val_loss", step=step, value=losses["val"], train_loss=losses["train"])
        if ctx.should_stop():
            checkpoint()
            return {"stopped": True, "step": step}
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batch("train")
        loss = loss_of(x, y)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += x.numel()
        state["step"] = step + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            value = float(loss.detach())
            state["history"].append({"step": step + 1, "loss": value, "lr": lr})
            elapsed = time.perf_counter() - started
            ctx.emit("progress", step=step + 1, total=config.steps, loss=round(value, 4), lr=lr,
                     tokens_per_s=round(tokens / elapsed, 1),
                     eta_s=round(elapsed / (step + 1 - first) * (config.steps - step - 1), 1))
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            checkpoint()
    wall = time.perf_counter() - started
    losses = estimate()
    state["evals"].append({"step": state["step"], **{f"{k}_loss": v for k, v in losses.items()}, "loss": losses["val"]})
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_deploy_info(ctx.workdir, str(out), out, None)
    sample = generate_sample(model, tok, splits["val"][:16], config.sample_tokens)
    metrics = {"val_loss": losses["val"], "train_loss": losses["train"], "val_ppl": math.exp(losses["val"]),
               "steps": state["step"], "tokens_per_s": tokens / wall if wall else 0.0, "wall_s": wall,
               "params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok),
               "corpus_tokens": len(ids), "threads": threads}
    ctx.emit("metric", name="val_loss", step=state["step"], value=losses["val"])
    for kind, path in (("model", out), ("tokenizer", out)):
        ctx.artifact(kind, path)
    samples = [{"prompt": tok.decode(splits["val"][:16].tolist()), "before": "(random init)", "after": sample}]
    files = report.write(ctx.workdir, metrics, state["history"], samples, artifacts={"model": str(out)},
                         evals=state["evals"], title=f"job {ctx.job_id} (pretrain)")
    for kind, path in files.items():
        ctx.artifact(kind, path)
    return {**metrics, "evals": state["evals"], "sample": sample,
            "artifacts": {"model": str(out), **{k: str(v) for k, v in files.items()}}}


def generate_sample(model: Any, tok: Any, prompt: Any, n: int) -> str:
    import torch

    if n == 0:
        return ""
    model.eval()
    with torch.no_grad():
        ids = model.generate(prompt[None, :], max_new_tokens=n, do_sample=True, top_k=50, temperature=0.8,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(ids[0, prompt.numel():].tolist(), skip_special_tokens=True)
