"""Recipes, for real on CPU with tiny models: validation, LoRA learns and resumes, pretrain, DPO, SFT, distill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import UserError
from tests.conftest import MODELS_DIR
from training.recipes import get, names, validate
from training.recipes.testing import LocalRunContext

COLOURS = ["red red red", "blue blue", "green green green green", "yellow"]


@pytest.fixture(autouse=True)
def models_dir(monkeypatch):
    monkeypatch.setenv("LADDER_MODELS_DIR", str(MODELS_DIR))


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    """A tiny repetitive dataset a 2-layer model can learn in a few steps."""
    path = tmp_path_factory.mktemp("data") / "colours.jsonl"
    rows = [{"instruction": f"Colour {i % 4}?", "output": COLOURS[i % 4]} for i in range(48)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lora_params(data: Path, **extra: str) -> dict[str, str]:
    params = {"base": "tiny-llama", "data": str(data), "steps": "12", "batch_size": "8", "lr": "3e-2",
              "r": "8", "dropout": "0", "log_every": "1", "checkpoint_every": "4", "samples": "1",
              "max_new_tokens": "4", "held_out": "0.1"}
    params.update(extra)
    return params


# -- validation ---------------------------------------------------------------------------------------

def test_every_recipe_is_registered():
    # other test modules may register test-only recipes (e.g. `count`) in the same process
    assert {"distill", "dpo", "lora", "pretrain", "qlora", "sft"} <= set(names())


@pytest.mark.parametrize(("params", "message"), [
    ({"step": "5"}, r"Unknown parameter `step` for recipe lora\. Did you mean `steps`\?"),
    ({"steps": "five"}, r"`steps=five`: steps must be a whole number"),
    ({"steps": "2.5"}, r"steps must be a whole number"),
    ({"lr": "5"}, r"`lr=5.0` is out of range: lr must be between 1e-07 and 1.0"),
    ({"dtype": "fp8"}, r"`dtype=fp8`: choose one of auto, float32, bfloat16"),
    ({"base": "gpt-17"}, r"Unknown base model `gpt-17`"),
    ({"targets": ""}, r"`targets=`: give module names like q_proj"),
    ({"data": "/nope/x.jsonl"}, r"Dataset `/nope/x.jsonl` not found"),
])
def test_bad_params_give_one_line_errors(sft_file, params, message):
    with pytest.raises(UserError, match=message):
        validate("lora", {"base": "tiny-llama", "data": str(sft_file), **params})


def test_bad_dataset_line_refused_at_submit(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl line 2: missing `output`"):
        validate("lora", {"base": "tiny-llama", "data": str(bad)})


def test_unknown_recipe_and_qlora_without_cuda(sft_file):
    with pytest.raises(UserError, match=r"Unknown recipe `lorra`\. Did you mean `lora`\?"):
        get("lorra")
    with pytest.raises(UserError, match=r"qlora needs a CUDA GPU"):
        validate("qlora", {"base": "tiny-llama", "data": str(sft_file)}, device="cpu")
    assert validate("qlora", {"base": "tiny-llama", "data": str(sft_file)}, device="cuda").quant_type == "nf4"
    assert get("qlora").needs_cuda and not get("lora").needs_cuda


def test_memory_estimates_rank_recipes(sft_file):
    params = {"base": "smollm2", "data": str(sft_file)}
    mem = {name: get(name).estimate_memory_gb(validate(name, params)) for name in ("lora", "qlora", "sft")}
    assert mem["qlora"] < mem["lora"] < mem["sft"]
    assert 0.5 < mem["lora"] < 4 and mem["sft"] > 2  # 135M params: ~0.65 GB fp32, x16 for full AdamW
    assert get("pretrain").estimate_memory_gb(validate("pretrain", {"data": str(sft_file)})) > 0
    with pytest.raises(UserError, match=r"vocab_size=100 is too small for byte-level BPE"):
        validate("pretrain", {"data": str(sft_file), "vocab_size": "100"})


# -- LoRA ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_run(sft_file, tmp_path_factory):
    import os

    os.environ["LADDER_MODELS_DIR"] = str(MODELS_DIR)
    ctx = LocalRunContext(config=validate("lora", lora_params(sft_file)), workdir=tmp_path_factory.mktemp("lora"))
    return ctx, get("lora").run(ctx)


def test_lora_changes_adapter_and_lowers_loss(lora_run):
    import torch
    from safetensors.torch import load_file

    ctx, metrics = lora_run
    progress = ctx.of("progress")
    assert [p["step"] for p in progress] == list(range(1, 13))
    assert {"loss", "lr", "tokens_per_s", "eta_s", "total"} <= set(progress[0])
    losses = [p["loss"] for p in progress]
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4
    assert metrics["ppl_after"] < metrics["ppl_before"]
    weights = load_file(ctx.workdir / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # peft initialises lora_B to zero
    kinds = {kind for kind, _, _ in ctx.artifacts}
    assert {"adapter", "plot", "report"} <= kinds
    assert (ctx.workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ppl_before" in (ctx.workdir / "report.md").read_text()


def test_merged_adapter_matches_peft_model(lora_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.export import deploy_plan, merge_adapter

    ctx, _ = lora_run
    plan = deploy_plan(ctx.workdir)
    assert plan.adapter_path == ctx.workdir / "adapter" and plan.base_name == "tiny-llama"
    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(plan.base_path, plan.adapter_path, tmp_path / "m"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(plan.base_path), plan.adapter_path)
    ids = torch.tensor([[1, 5, 9, 20, 30]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, atol=1e-4, rtol=1e-4)


def test_lora_stops_when_cancelled_and_resumes_at_saved_step(sft_file, lora_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    config = validate("lora", lora_params(sft_file))
    first = LocalRunContext(config=config, workdir=tmp_path, stop_when=lambda c: len(c.of("progress")) >= 6)
    assert get("lora").run(first) == {"stopped": True, "step": 6}
    assert first.checkpoints[-1] == tmp_path / "ckpt.pt"
    second = LocalRunContext(config=config, workdir=tmp_path, resume_from=first.checkpoints[-1])
    metrics = get("lora").run(second)
    assert second.of("log")[0]["message"] == "resumed from step 6"
    assert [p["step"] for p in second.of("progress")] == list(range(7, 13))
    assert metrics["steps"] == 12
    straight, _ = lora_run  # the same config run without interruption ends with the same adapter
    a = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    b = load_file(straight.workdir / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


# -- the other recipes --------------------------------------------------------------------------------

def test_pretrain_bpe_model_and_tokenizer_load_and_generate(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("The bot answers questions about the team handbook. Deploys happen on Fridays. "
                       "Ask in the thread and the bot replies with citations.\n") * 40)
    config = validate("pretrain", {"data": str(corpus), "steps": "40", "vocab_size": "300", "n_layer": "2",
                                   "n_embd": "64", "block_size": "32", "batch_size": "8", "eval_every": "20",
                                   "eval_iters": "2", "warmup_steps": "5", "log_every": "10", "sample_tokens": "8"})
    ctx = LocalRunContext(config=config, workdir=tmp_path / "job")
    metrics = get("pretrain").run(ctx)
    vals = [m["value"] for m in ctx.of("metric") if m["name"] == "val_loss"]
    assert len(vals) == 3 and vals[-1] < vals[0]
    assert metrics["val_loss"] == vals[-1] and metrics["tokens_per_s"] > 0
    tok = AutoTokenizer.from_pretrained(ctx.workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(ctx.workdir / "model")
    assert 259 < len(tok) <= 300 and model.config.num_hidden_layers == 2
    ids = tok("The bot", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 5 and isinstance(tok.decode(out[0]), str)
    assert (ctx.workdir / "loss.png").exists() and (ctx.workdir / "ckpt.pt").exists() is False


def test_pretrain_char_level_resumes_from_checkpoint(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 30)
    params = {"data": str(corpus), "tokenizer": "char", "steps": "20", "n_layer": "1", "n_embd": "32",
              "block_size": "16", "batch_size": "4", "eval_every": "0", "checkpoint_every": "10", "log_every": "5",
              "sample_tokens": "10"}
    first = LocalRunContext(config=validate("pretrain", params), workdir=tmp_path / "j",
                            stop_when=lambda c: len(c.of("progress")) >= 2)
    assert get("pretrain").run(first) == {"stopped": True, "step": 10}
    second = LocalRunContext(config=first.config, workdir=tmp_path / "j", resume_from=first.checkpoints[-1])
    metrics = get("pretrain").run(second)
    assert [p["step"] for p in second.of("progress")] == [15, 20]
    assert metrics["vocab_size"] == len(set(corpus.read_text())) + 1
    assert set(metrics["sample"]) <= set(corpus.read_text())


def test_dpo_runs_a_few_steps(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": "A kind, correct answer.",
                                         "rejected": "rude"}) + "\n" for i in range(12)))
    config = validate("dpo", {"base": "tiny-llama", "data": str(prefs), "steps": "3", "batch_size": "2",
                              "log_every": "1", "checkpoint_every": "0", "samples": "1", "max_new_tokens": "4",
                              "held_out": "0.2", "lr": "1e-2"})
    ctx = LocalRunContext(config=config, workdir=tmp_path / "dpo")
    metrics = get("dpo").run(ctx)
    assert metrics["steps"] == 3 and [p["step"] for p in ctx.of("progress")] == [1, 2, 3]
    assert metrics["preference_accuracy"] is not None
    assert (ctx.workdir / "adapter" / "adapter_config.json").exists()
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(UserError, match=r"DPO needs prompt/chosen/rejected"):
        validate("dpo", {"base": "tiny-llama", "data": str(alpaca)})


def test_sft_trains_every_weight(sft_file, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from training.recipes.common import base_path

    config = validate("sft", {"base": "tiny-llama", "data": str(sft_file), "steps": "3", "lr": "1e-3",
                              "checkpoint_every": "0", "samples": "0"})
    ctx = LocalRunContext(config=config, workdir=tmp_path)
    metrics = get("sft").run(ctx)
    assert metrics["trainable_params"] > 90_000
    before = AutoModelForCausalLM.from_pretrained(base_path("tiny-llama")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)


def test_distill_learns_from_a_teacher(tmp_path):
    from bot.llm.base import ChatModel, ChatResult

    class Teacher(ChatModel):
        name, backend = "teacher", "test"

        def __init__(self) -> None:
            self.asked: list[str] = []

        async def chat(self, messages, **kwargs):
            self.asked.append(messages[-1].content)
            return ChatResult(text=f"The answer to '{messages[-1].content}' is 42.", model=self.name,
                              backend=self.backend)

    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"What is item {i}?\n" for i in range(8)) + '{"question": "Why?"}\n')
    config = validate("distill", {"base": "tiny-llama", "questions": str(questions), "steps": "2", "batch_size": "4",
                                  "checkpoint_every": "0", "samples": "1", "max_new_tokens": "4"})
    ctx = LocalRunContext(config=config, workdir=tmp_path / "job")
    ctx.teacher = Teacher()  # type: ignore[attr-defined]
    metrics = get("distill").run(ctx)
    assert ctx.teacher.asked[-1] == "Why?" and len(ctx.teacher.asked) == 9  # type: ignore[attr-defined]
    assert metrics["distilled_examples"] == 9 and metrics["steps"] == 2
    lines = (ctx.workdir / "distill.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["messages"][1]["content"] == "The answer to 'What is item 0?' is 42."
    with pytest.raises(UserError, match=r"Question file `.*missing.txt` not found"):
        validate("distill", {"base": "tiny-llama", "questions": str(tmp_path / "missing.txt")})
