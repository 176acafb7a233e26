"""Benchmark: the `lora` recipe vs a plain trl SFTTrainer script with default settings, in one run.

Same model (SmolLM2-135M-Instruct, the embedded checkpoint), same data (alpaca_gpt4_en_demo_llamafactory:
100 held-out examples, the rest trains), LoRA r=16 on q/k/v/o, batch 8, max length 256, 60 steps.
Reported: real (non-padding) tokens/s during training and response-token perplexity on the 100
held-out responses before/after (training/evaluate.py, the same function for both).
Target: >= 1.3x the plain script's real tokens/s with at least the same perplexity gain.

    .venv/bin/python bench/train_lora.py                 # full (slow on 2 CPU cores)
    .venv/bin/python bench/train_lora.py --steps 2 --held 8   # smoke check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.train_common import SHARED, machine, save, table  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def plain_trl(train: list[Any], held_rows: list, args: argparse.Namespace, base: Path, pad: int) -> dict[str, Any]:
    """What a user would write from trl's docs: SFTTrainer + SFTConfig defaults + a peft LoraConfig.

    `use_cpu=True` is the one change a CPU box needs (otherwise SFTConfig's default bf16=True refuses to
    start); everything else (bf16 autocast, gradient checkpointing, lr 2e-5, padding) stays default."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from training import evaluate

    ds = Dataset.from_list([{"prompt": ex.prompt, "completion": [ex.messages[-1]]} for ex in train])
    config = SFTConfig(output_dir=tempfile.mkdtemp(prefix="bench-trl-"), max_steps=args.steps,
                       per_device_train_batch_size=args.batch, max_length=args.max_length, report_to="none",
                       save_strategy="no", logging_steps=10, disable_tqdm=True, use_cpu=True)
    trainer = SFTTrainer(model=str(base), args=config, train_dataset=ds,
                         peft_config=LoraConfig(r=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    counts = {"real": 0, "padded": 0}
    collate = trainer.data_collator

    def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(features)
        counts["real"] += int(batch["attention_mask"].sum())
        counts["padded"] += int(batch["attention_mask"].numel())
        return batch

    trainer.data_collator = counting
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    ppl_after = evaluate.perplexity(trainer.model, held_rows, pad)
    return {"train_wall_s": wall, "real_tokens": counts["real"], "padded_tokens": counts["padded"],
            "real_tokens_per_s": counts["real"] / wall, "padding_fraction": 1 - counts["real"] / counts["padded"],
            "ppl_after": ppl_after, "settings": {"bf16": config.bf16, "gradient_checkpointing":
                                                 config.gradient_checkpointing, "lr": config.learning_rate}}


def recipe_run(data_dir: Path, args: argparse.Namespace, n_examples: int) -> dict[str, Any]:
    from training.recipes import get, validate
    from training.recipes.testing import LocalRunContext

    params = {"base": "smollm2", "data": str(data_dir), "steps": str(args.steps), "batch_size": str(args.batch),
              "max_length": str(args.max_length), "r": "16", "targets": ",".join(TARGETS),
              "held_out": str(args.held / n_examples), "max_eval": str(args.held), "samples": "0",
              "checkpoint_every": "0", "log_every": "10", "limit": str(args.limit)}
    ctx = LocalRunContext(config=validate("lora", params), workdir=Path(tempfile.mkdtemp(prefix="bench-lora-")))
    start = time.perf_counter()
    metrics = get("lora").run(ctx)
    metrics["total_wall_s"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--held", type=int, default=100)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N examples")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    from training import data
    from training.recipes.common import base_path, encode_sft, load_base, seed_all, set_threads

    threads = set_threads(args.threads)
    data_dir = SHARED / "alpaca_gpt4_en_demo_llamafactory"
    examples = data.limit(data.load(str(data_dir)), args.limit)
    train, held = data.split(examples, args.held / len(examples), 1337, args.held)
    start_machine = machine()
    print(f"{len(train)} train / {len(held)} held-out; {threads} threads; load {start_machine['load_avg']}")

    ours = recipe_run(data_dir, args, len(examples))
    print(f"lora recipe: {ours['real_tokens_per_s']:.1f} real tok/s, ppl {ours['ppl_before']:.3f} -> "
          f"{ours['ppl_after']:.3f}", flush=True)

    seed_all(1337)
    model, tok, _ = load_base("smollm2")
    held_rows = [encode_sft(tok, ex, args.max_length) for ex in held]
    del model
    base = plain_trl(train, held_rows, args, base_path("smollm2"), tok.pad_token_id)
    base["ppl_before"] = ours["ppl_before"]  # same base model, same rows, same function

    speedup = ours["real_tokens_per_s"] / base["real_tokens_per_s"]
    gain_ours, gain_base = ours["ppl_before"] - ours["ppl_after"], base["ppl_before"] - base["ppl_after"]
    rows = [("plain trl SFTTrainer", f"{base['real_tokens_per_s']:.1f}", f"{base['padding_fraction']:.0%}",
             f"{base['ppl_before']:.3f}", f"{base['ppl_after']:.3f}", f"{gain_base:.3f}", "1.00x"),
            ("ladder lora recipe", f"{ours['real_tokens_per_s']:.1f}", "-", f"{ours['ppl_before']:.3f}",
             f"{ours['ppl_after']:.3f}", f"{gain_ours:.3f}", f"{speedup:.2f}x")]
    print(table(rows, ("run", "real tok/s", "padding", "ppl before", "ppl after", "ppl gain", "speed")))
    passed = speedup >= 1.3 and gain_ours >= gain_base
    print(f"target >= 1.3x and ppl gain >= baseline: {'PASS' if passed else 'FAIL'}")
    result = {"benchmark": "train_lora", "args": vars(args), "train_examples": len(train), "held_out": len(held),
              "baseline": base, "recipe": {k: v for k, v in ours.items() if k not in ("samples", "artifacts")},
              "speedup": speedup, "ppl_gain": {"recipe": gain_ours, "baseline": gain_base}, "pass": passed,
              "machine_start": start_machine, "machine_end": machine()}
    print("wrote", save("train_lora" if args.steps == 60 and not args.limit else "train_lora_reduced", result))


if __name__ == "__main__":
    main()
