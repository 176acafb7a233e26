"""Pieces the fine-tuning recipes share: base models, tokenising chats, length-grouped batches.

Why length grouping: a batch padded to its longest example spends compute on padding (45% for
alpaca at batch 8 when examples are drawn at random). Batches of similar lengths, padded only to their
own longest, spend almost nothing on it and train on the same examples.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from training.data import SFTExample

TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Ladder is a chat bot that trains models. "
    "Questions and answers, instructions and responses, user and assistant. 0123456789 "
    "A small random Llama is enough to test that training runs, saves, resumes and generates. "
)
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_VERSION, TINY_INIT = "v2", 0.2  # a wider init than 0.02 so a few steps can move the tiny model's outputs
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def models_dir() -> Path:
    from bot.config import Settings

    return Settings(_env_file=None).model_cache_dir


def set_threads(threads: int) -> int:
    """Torch threads for this job (all cores it may use by default); also silences progress bars in job logs."""
    import datasets
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def train_bpe(texts: list[str], vocab_size: int, path: Path, chat_template: str | None = CHAT_TEMPLATE) -> Any:
    """Train a byte-level BPE tokenizer with `tokenizers`; saved as a transformers tokenizer in `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    return fast


def llama_config(vocab_size: int, *, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int,
                 context: int, tokenizer: Any, init_range: float = 0.02) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=context, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, initializer_range=init_range)


def tiny_llama(target: Path) -> Path:
    """A tiny random Llama (2 layers, hidden 64) with a 512-token BPE, built once in `target` (tests)."""
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import LlamaForCausalLM

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tok = train_bpe([TINY_CORPUS * 4], 512, tmp)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(len(tok), layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128,
                                          context=1024, tokenizer=tok, init_range=TINY_INIT))
    model.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process built it first
        pass
    return target


def base_path(base: str) -> Path:
    """The checkpoint directory of a base model name (converting/building built-ins once)."""
    if base == "smollm2":
        from bot.llm.local import convert_gguf

        return convert_gguf(models_dir() / "smollm2-135m-instruct")
    if base == "tiny-llama":
        return tiny_llama(models_dir() / f"tiny-llama-{TINY_VERSION}")
    return Path(base).expanduser()


def load_base(base: str, dtype: str = "auto") -> tuple[Any, Any, Path]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_path(base)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model, tok, path


def autocast(dtype: str, device: str) -> Any:
    """bf16 autocast (fp32 master weights) on CUDA, and on CPUs with native bf16 (AMX/AVX512-BF16) where it is
    ~2x faster than fp32; plain fp32 elsewhere (emulated bf16 on older CPUs is slower). `dtype=float32` opts out."""
    import torch

    if dtype == "float32":
        enabled = False
    elif device == "cuda":
        enabled = True
    else:
        enabled = dtype == "bfloat16" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16, enabled=enabled)


def render(tok: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "".join(f"### {m['role'].title()}:\n{m['content']}\n\n" for m in messages)
    return text + ("### Assistant:\n" if generation_prompt else "")


def encode_sft(tok: Any, ex: SFTExample, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are -100 on the prompt, so loss and perplexity cover the response only."""
    prompt = tok(render(tok, ex.prompt, True), add_special_tokens=False)["input_ids"]
    response = tok(ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(prompt) + len(response) > max_length:
        keep = min(len(response), max(max_length - len(prompt), max_length // 2))
        response = response[:keep]
        prompt = prompt[-(max_length - keep):] if max_length > keep else []
    return prompt + response, [-100] * len(prompt) + response


def grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group: bool = True) -> list[list[int]]:
    """Index batches for one epoch: shuffled, then sorted by length inside mega-batches of 50 batches."""
    order = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    if group:
        mega = batch_size * 50
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest row of this batch only."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, :len(row_ids)] = torch.tensor(row_ids)
        labels[r, :len(row_labels)] = torch.tensor(row_labels)
        mask[r, :len(row_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def response_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of NLL over response tokens, their count); logits are computed for response positions only."""
    import torch.nn.functional as F

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = head.weight.device
    batch = {k: v.to(device) for k, v in batch.items()}
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())
