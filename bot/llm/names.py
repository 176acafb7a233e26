"""Decode model names (Ollama and Hugging Face style) and estimate the memory a model needs. Pure: no I/O.

    >>> m = decode("deepseek-r1:1.5b-qwen-distill-q4_K_M")
    >>> (m.family, m.parameters_b, m.base_family, m.quantization)
    ('deepseek-r1', 1.5, 'qwen', 'Q4_K_M')
    >>> round(estimate_memory(m, 8192).total_gb, 1)
    1.4

Sizes are decimal GB (1e9 bytes). The estimate is weights + f16 KV cache + runtime overhead, where the
overhead (compute graph, scratch buffers, CUDA context) is a rule of thumb: 10% of weights + KV cache,
at least 0.3 GB.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UserError

GB = 1e9
OLLAMA_DEFAULT_QUANT = "Q4_K_M"  # what Ollama's plain tags (llama3.1:8b, :latest) point to
MAX_NAME_LENGTH = 256

BITS_PER_WEIGHT: dict[str, float] = {  # effective bits per weight, block scales included
    "Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5,
    "Q2_K": 2.63, "Q3_K_S": 3.5, "Q3_K_M": 3.91, "Q3_K_L": 4.27, "Q4_K_S": 4.58, "Q4_K_M": 4.85,
    "Q5_K_S": 5.54, "Q5_K_M": 5.69, "Q6_K": 6.56, "F16": 16.0, "BF16": 16.0, "F32": 32.0,
    "IQ1_S": 1.56, "IQ1_M": 1.75, "IQ2_XXS": 2.06, "IQ2_XS": 2.31, "IQ2_S": 2.5, "IQ2_M": 2.7,
    "IQ3_XXS": 3.06, "IQ3_XS": 3.3, "IQ3_S": 3.44, "IQ3_M": 3.66, "IQ4_XS": 4.25, "IQ4_NL": 4.5,
}  # fmt: skip

_QUANT = re.compile(
    r"(?<![a-z0-9])(iq\d_(?:xxs|xs|s|m|nl)|q\d_k_[sml]|q\d_k|q\d_[01]|b?fp?16|fp?32)(?![a-z0-9])", re.I
)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bm])", re.I)
_MOE = re.compile(r"(\d+)x(\d+(?:\.\d+)?)b", re.I)
_MOE_TOTAL = {(8, 7.0): 46.7, (8, 22.0): 141.0}  # experts share attention, so total < n * size
_VARIANTS = {"instruct": "instruct", "it": "instruct", "chat": "chat", "base": "base", "code": "code",
             "vision": "vision", "text": "text"}  # fmt: skip
_OLLAMA_HOSTS = ("hf.co", "huggingface.co", "library", "registry.ollama.ai")
_VALID = re.compile(r"[A-Za-z0-9._:/@+-]+")


class ModelNameError(UserError, ValueError):
    """A model name that cannot be decoded at all (empty, malformed, absurdly long)."""


@dataclass(frozen=True)
class ModelName:
    """What a model name says. `parameters_b` is None when the name does not say."""

    raw: str
    family: str
    parameters_b: float | None = None
    variant: str | None = None  # instruct | chat | base | code | vision | text
    quantization: str | None = None
    quantization_assumed: str | None = None  # used when `quantization` is None
    tag: str | None = None  # Ollama tag ("latest" when absent); None for Hugging Face names
    tags: tuple[str, ...] = ()  # other words: "distill", "mini", "v0.2", ...
    base_family: str | None = None  # for distills: the base model the teacher was distilled into
    context_hint: int | None = None  # "128k" in the name -> 131072
    style: str = "ollama"  # ollama | huggingface
    repo: str | None = None  # Hugging Face "org/name"
    file: str | None = None  # GGUF file name, when given
    notes: tuple[str, ...] = ()

    @property
    def size_label(self) -> str | None:
        """The size as people write it, or None.

        >>> decode("SmolLM2-135M-Instruct").size_label, decode("mistral:7b").size_label
        ('135M', '7B')
        """
        p = self.parameters_b
        return None if p is None else f"{p * 1000:g}M" if p < 1 else f"{p:g}B"


def parse_size(text: str) -> float | None:
    """Billions of parameters in "7b", "135M", "8.0B" (Ollama's parameter_size); else None.

    >>> parse_size("135M"), parse_size("8.0B"), parse_size("mini")
    (0.135, 8.0, None)
    """
    m = _SIZE.fullmatch(text.strip())
    if not m:
        return None
    value = float(m.group(1))
    return round(value / 1000, 6) if m.group(2).lower() == "m" else value


def _classify(token: str, out: dict[str, Any]) -> bool:
    """Record what a descriptor token means in `out`; False when it is a plain word."""
    t = token.lower()
    if (size := parse_size(t)) is not None:
        out.setdefault("parameters_b", size)
    elif m := _MOE.fullmatch(t):
        n, each = int(m.group(1)), float(m.group(2))
        total = _MOE_TOTAL.get((n, each))
        how = "in total, fewer active per token" if total else "at most (experts share layers)"
        total = total or n * each
        out["notes"].append(f"mixture of experts {t}: {total:g}B parameters {how}")
        out.setdefault("parameters_b", total)
    elif m := re.fullmatch(r"e(\d+(?:\.\d+)?)b", t):
        out.setdefault("parameters_b", float(m.group(1)))
        out["notes"].append(f"{t}: effective size; the file holds more parameters (per-layer embeddings)")
    elif m := re.fullmatch(r"a(\d+(?:\.\d+)?)b", t):
        out["notes"].append(f"{t}: about {m.group(1)}B parameters active per token")
    elif m := re.fullmatch(r"(\d+)k", t):
        out["context_hint"] = int(m.group(1)) * 1024
    elif t in _VARIANTS:
        out["variant"] = out.get("variant") or _VARIANTS[t]
    elif t == "distill":
        out["tags"].append("distill")
    elif re.fullmatch(r"v\d+(\.\d+)*", t):
        out["tags"].append(t)
    elif t not in ("gguf", "latest", ""):
        return False
    return True


def _hf_family(tokens: list[str]) -> tuple[str, list[str]]:
    """Leading plain words form the family ("Llama-3.1" -> "llama3.1"); the rest are descriptors."""
    words: list[str] = []
    for i, tok in enumerate(tokens):
        if _classify(tok, {"notes": [], "tags": []}):
            return _join_family(words), tokens[i:]
        words.append(tok.lower())
    return _join_family(words), []


def _join_family(words: list[str]) -> str:
    words = words[1:] if len(words) > 1 and words[0] == "meta" else words
    out: list[str] = []
    for w in words:
        if out and re.fullmatch(r"\d+(\.\d+)*", w):
            out[-1] += w  # "llama", "3.1" -> "llama3.1"
        else:
            out.append(w)
    return "-".join(out)


def decode(name: str, file: str | None = None) -> ModelName:
    """Decode an Ollama name ("llama3.1:8b") or a Hugging Face repo (+ optional GGUF file).

    >>> decode("mistral:7b-instruct-q4_0").variant
    'instruct'
    >>> decode("TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "mistral-7b-instruct-v0.2.Q5_K_M.gguf").quantization
    'Q5_K_M'
    """
    raw = (name or "").strip()
    if not raw:
        raise ModelNameError("The model name is empty; give one such as llama3.1:8b.")
    if len(raw) > MAX_NAME_LENGTH:
        raise ModelNameError(f"That model name is {len(raw)} characters; the most is {MAX_NAME_LENGTH}.")
    if not _VALID.fullmatch(raw):
        raise ModelNameError(f"'{raw[:60]}' is not a model name: use letters, digits and . _ - : / only.")
    repo, _, last = raw.rpartition("/")
    if last.lower().endswith(".gguf") and file is None:
        file, (repo, _, last) = last, repo.rpartition("/")
        last = last or re.sub(r"\.gguf$", "", file, flags=re.I)  # a bare file name: it names the model too
    if last.count(":") > 1:
        raise ModelNameError(f"'{raw}' has more than one ':'; write it as name:tag, e.g. llama3.1:8b.")
    model, colon, tag = last.partition(":")
    if not model or (colon and not tag):
        raise ModelNameError(f"'{raw}' lacks a model name or a tag; write name:tag, e.g. llama3.1:8b.")
    host = repo.split("/")[0].lower()
    parts = model.split("-")
    has_size = any(parse_size(p) is not None or _MOE.fullmatch(p) for p in parts)
    ollama = bool(colon) or host in _OLLAMA_HOSTS or (not repo and model.islower() and not has_size)
    out: dict[str, Any] = {"notes": [], "tags": []}
    if has_size or model != model.lower() or not ollama:
        family, rest = _hf_family(parts)
        family = family or model.lower()
    else:
        family, rest = model.lower(), []
    words: list[str] = []
    descriptors = "-".join([*rest, tag, re.sub(r"\.gguf$", "", file or "", flags=re.I)])
    quant = ([m.group(1).upper() for m in _QUANT.finditer(descriptors)] or [None])[-1]  # the file's wins
    quant = {"FP16": "F16", "FP32": "F32"}.get(quant, quant) if quant else None
    for tok in re.split(r"-|(?<![v\d])\.", _QUANT.sub("", descriptors)):
        if not _classify(tok.strip("._"), out):
            words.append(tok.strip("._").lower())
    if file:  # the file name repeats the family; do not count its words as tags
        words = [w for w in words if w not in family.split("-")]
    base = None
    if "distill" in out["tags"] and words:
        base, words = words[0], words[1:]
    if "coder" in family.split("-") and "code" not in out["tags"]:
        out["tags"].append("code")
    assumed = None
    if quant is None:
        assumed = OLLAMA_DEFAULT_QUANT if ollama or "gguf" in model.lower() else "BF16"
    return ModelName(
        raw=raw, family=family, parameters_b=out.get("parameters_b"), variant=out.get("variant"),
        quantization=quant, quantization_assumed=assumed, tag=(tag or "latest") if ollama else None,
        tags=tuple(dict.fromkeys(out["tags"] + words)), context_hint=out.get("context_hint"),
        style="ollama" if ollama else "huggingface", repo=f"{repo}/{model}" if repo and not ollama else None,
        base_family=base, file=file, notes=tuple(out["notes"]),
    )  # fmt: skip


@dataclass(frozen=True)
class Arch:
    """The shape that sizes the KV cache."""

    n_layers: int
    n_kv_heads: int
    head_dim: int

    @classmethod
    def from_modelinfo(cls, info: dict[str, Any]) -> Arch | None:
        """From Ollama /api/show `model_info`; None when the keys are missing.

        >>> Arch.from_modelinfo({"general.architecture": "llama", "llama.block_count": 32,
        ...     "llama.attention.head_count_kv": 8, "llama.embedding_length": 4096,
        ...     "llama.attention.head_count": 32})
        Arch(n_layers=32, n_kv_heads=8, head_dim=128)
        """
        a = info.get("general.architecture")
        layers, kv = info.get(f"{a}.block_count"), info.get(f"{a}.attention.head_count_kv")
        heads, emb = info.get(f"{a}.attention.head_count"), info.get(f"{a}.embedding_length")
        kv, heads = (max(v) if isinstance(v, list) and v else v for v in (kv, heads))
        head_dim = info.get(f"{a}.attention.key_length") or (emb // heads if emb and heads else None)
        if not (a and layers and head_dim and (kv or heads)):
            return None
        return cls(int(layers), int(kv or heads), int(head_dim))


TYPICAL_ARCH: list[tuple[float, str, Arch]] = [  # (billions, example, shape)
    (0.135, "SmolLM2-135M", Arch(30, 3, 64)), (0.36, "SmolLM2-360M", Arch(32, 5, 64)),
    (0.5, "Qwen2.5-0.5B", Arch(24, 2, 64)), (1.5, "Qwen2-1.5B", Arch(28, 2, 128)),
    (1.7, "SmolLM2-1.7B", Arch(24, 32, 64)), (3.0, "Llama-3.2-3B", Arch(28, 8, 128)),
    (7.0, "Mistral-7B", Arch(32, 8, 128)), (8.0, "Llama-3-8B", Arch(32, 8, 128)),
    (13.0, "Llama-2-13B", Arch(40, 40, 128)), (34.0, "CodeLlama-34B", Arch(48, 8, 128)),
    (46.7, "Mixtral-8x7B", Arch(32, 8, 128)), (70.0, "Llama-3-70B", Arch(80, 8, 128)),
]  # fmt: skip


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gb: float
    kv_cache_gb: float
    overhead_gb: float
    total_gb: float
    bits_per_weight: float
    context_length: int
    assumptions: list[str] = field(default_factory=list)


def estimate_memory(
    name: ModelName, context_length: int, *, arch: Arch | None = None, parameters_b: float | None = None
) -> MemoryEstimate:
    """Weights + f16 KV cache + overhead. `arch`/`parameters_b` come from the server when it knows them.

    >>> e = estimate_memory(decode("llama3.1:8b"), 8192)
    >>> round(e.weights_gb, 2), round(e.kv_cache_gb, 2), e.assumptions[0]
    (4.85, 1.07, "quantization not in the name: assumed Q4_K_M (Ollama's default)")
    """
    params = parameters_b if parameters_b is not None else name.parameters_b
    if params is None:
        raise ModelNameError(f"Cannot size '{name.raw}': its size is unknown (use a tag like :8b).")
    if context_length < 1:
        raise ModelNameError(f"Context length must be positive, not {context_length}.")
    notes: list[str] = []
    quant = name.quantization
    if quant is None:
        quant = name.quantization_assumed or "F16"
        why = " (Ollama's default)" if quant == OLLAMA_DEFAULT_QUANT else ""
        notes.append(f"quantization not in the name: assumed {quant}{why}")
    bits = BITS_PER_WEIGHT.get(quant)
    if bits is None:
        digits = re.search(r"\d+", quant)
        bits = int(digits.group()) + 0.5 if digits else 16.0
        notes.append(f"no bits/weight known for {quant}: assumed {bits:g}")
    if arch is None:
        _, example, arch = min(TYPICAL_ARCH, key=lambda row: abs(math.log(row[0] / max(params, 1e-3))))
        notes.append(f"architecture unknown: assumed one like {example} ({arch})")
    weights = params * 1e9 * bits / 8 / GB
    kv = 2 * arch.n_layers * arch.n_kv_heads * arch.head_dim * context_length * 2 / GB
    overhead = max(0.3, 0.1 * (weights + kv))
    notes.extend(name.notes)
    return MemoryEstimate(weights, kv, overhead, weights + kv + overhead, bits, context_length, notes)


def fits(estimate: MemoryEstimate, gpu_gb: float | None, cpu_gb: float | None) -> str:
    """One sentence on where the model fits.

    >>> e = estimate_memory(decode("llama3.1:8b"), 8192)
    >>> fits(e, 24, 64)
    'Fits on the GPU: needs ~6.5 GB of 24.0 GB.'
    """
    need = f"~{estimate.total_gb:.1f} GB"
    if gpu_gb is not None and estimate.total_gb <= gpu_gb:
        return f"Fits on the GPU: needs {need} of {gpu_gb:.1f} GB."
    if gpu_gb is None and cpu_gb is not None and estimate.total_gb <= cpu_gb:
        return f"No GPU: fits in RAM (needs {need} of {cpu_gb:.1f} GB) but runs slowly on the CPU."
    if gpu_gb is not None and cpu_gb is not None and estimate.total_gb <= gpu_gb + cpu_gb:
        return (
            f"Does not fit the GPU (needs {need}, GPU has {gpu_gb:.1f} GB) but fits with RAM "
            f"({cpu_gb:.1f} GB): it will run slowly with CPU offload."
        )
    if gpu_gb is None and cpu_gb is None:
        return f"Needs {need}; GPU and RAM sizes are unknown."
    have = " and ".join(f"{k} has {v:.1f} GB" for k, v in (("GPU", gpu_gb), ("RAM", cpu_gb)) if v is not None)
    return f"Does not fit: needs {need}, {have}. Try a smaller model, quantization or context."


def describe(
    name: ModelName, estimate: MemoryEstimate | None = None, *, gpu_gb: float | None = None,
    cpu_gb: float | None = None,
) -> str:  # fmt: skip
    """Multi-line summary for `/models info` and `ladder models info`.

    >>> m = decode("deepseek-r1:1.5b-qwen-distill-q4_K_M")
    >>> print(describe(m, estimate_memory(m, 4096)).splitlines()[1])
    family: deepseek-r1, distilled into a qwen base
    """
    e, q = estimate, name.quantization
    if q:
        quant = f"{q} (~{BITS_PER_WEIGHT[q]:g} bits/weight)" if q in BITS_PER_WEIGHT else q
    else:
        quant = f"not in the name (assumed {name.quantization_assumed or 'F16'})"
    rows = [name.raw, f"family: {name.family}"]
    if name.base_family:
        rows[-1] += f", distilled into a {name.base_family} base"
    rows.append(f"parameters: {name.size_label or 'unknown (the name does not say)'}")
    rows += [f"variant: {name.variant}"] if name.variant else []
    rows += [f"tags: {', '.join(name.tags)}"] if name.tags else []
    rows.append(f"quantization: {quant}")
    rows += [f"context: up to {name.context_hint // 1024}k tokens"] if name.context_hint else []
    if e is None:
        rows += ["memory: unknown", *(f"note: {n}" for n in name.notes)]
        return "\n".join(rows)
    rows.append(
        f"memory at {e.context_length:,} tokens of context: ~{e.total_gb:.1f} GB"
        f" (weights {e.weights_gb:.2f} + KV cache {e.kv_cache_gb:.2f} + overhead {e.overhead_gb:.2f} GB)"
    )
    rows += [fits(e, gpu_gb, cpu_gb)] if gpu_gb is not None or cpu_gb is not None else []
    return "\n".join(rows + [f"assumed: {a}" for a in e.assumptions])
