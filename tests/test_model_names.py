"""Pure unit tests for bot.llm.names: decoding model names, memory estimates, fit sentences."""

from __future__ import annotations

import dataclasses
import doctest

import pytest

from bot.errors import UserError
from bot.llm import names
from bot.llm.names import Arch, ModelNameError, decode, describe, estimate_memory, fits

# name -> (family, parameters_b, variant, quantization, quantization_assumed)
CASES = {
    "mistral:7b-instruct-q4_0": ("mistral", 7.0, "instruct", "Q4_0", None),
    "deepseek-r1:1.5b-qwen-distill-q4_K_M": ("deepseek-r1", 1.5, None, "Q4_K_M", None),
    "llama3.1:8b": ("llama3.1", 8.0, None, None, "Q4_K_M"),
    "llama3.1:70b-instruct-q8_0": ("llama3.1", 70.0, "instruct", "Q8_0", None),
    "qwen2.5-coder:1.5b-base-fp16": ("qwen2.5-coder", 1.5, "base", "F16", None),
    "phi3:3.8b-mini-128k-instruct-q4_K_M": ("phi3", 3.8, "instruct", "Q4_K_M", None),
    "mixtral:8x7b": ("mixtral", 46.7, None, None, "Q4_K_M"),
    "SmolLM2-135M-Instruct": ("smollm2", 0.135, "instruct", None, "BF16"),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ("smollm2", 1.7, "instruct", None, "BF16"),
    "gemma2:2b": ("gemma2", 2.0, None, None, "Q4_K_M"),
    "llama3": ("llama3", None, None, None, "Q4_K_M"),
    "llama3:latest": ("llama3", None, None, None, "Q4_K_M"),
    "qwen2.5:latest": ("qwen2.5", None, None, None, "Q4_K_M"),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3.1", 8.0, "instruct", None, "BF16"),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": ("deepseek-r1", 1.5, None, None, "BF16"),
    "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M": ("llama3.2", 1.0, "instruct", "Q4_K_M", None),
    "gemma3n:e2b": ("gemma3n", 2.0, None, None, "Q4_K_M"),
    "llama3.1:8b-instruct-iq2_xs": ("llama3.1", 8.0, "instruct", "IQ2_XS", None),
    "llama3.1:8b-instruct-bf16": ("llama3.1", 8.0, "instruct", "BF16", None),
}


@pytest.mark.parametrize("raw", list(CASES))
def test_decode_known_names(raw: str) -> None:
    m = decode(raw)
    got = (m.family, m.parameters_b, m.variant, m.quantization, m.quantization_assumed)
    assert got == CASES[raw]
    assert m.raw == raw


def test_decode_details() -> None:
    r1 = decode("deepseek-r1:1.5b-qwen-distill-q4_K_M")
    assert r1.base_family == "qwen" and "distill" in r1.tags and r1.size_label == "1.5B"
    assert decode("deepseek-r1:8b-llama-distill-q4_K_M").base_family == "llama"
    assert decode("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").base_family == "qwen"
    phi = decode("phi3:3.8b-mini-128k-instruct-q4_K_M")
    assert phi.context_hint == 128 * 1024 and "mini" in phi.tags
    moe = decode("mixtral:8x7b")
    assert any("mixture of experts" in n for n in moe.notes)
    assert decode("mixtral:8x22b").parameters_b == 141.0
    assert decode("mymoe:4x3b").parameters_b == 12.0 and "at most" in decode("mymoe:4x3b").notes[0]
    assert "effective" in decode("gemma3n:e2b").notes[0]
    assert "code" in decode("qwen2.5-coder:1.5b-base-fp16").tags
    smol = decode("SmolLM2-135M-Instruct")
    assert smol.style == "huggingface" and smol.size_label == "135M" and smol.tag is None
    assert decode("HuggingFaceTB/SmolLM2-1.7B-Instruct").repo == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert decode("llama3").style == "ollama"
    tags = {"llama3": "latest", "llama3:latest": "latest", "mistral:7b-instruct-q4_0": "7b-instruct-q4_0"}
    assert {raw: decode(raw).tag for raw in tags} == tags
    assert decode("  llama3.1:8b  ").raw == "llama3.1:8b"


def test_decode_gguf_file() -> None:
    want = ("mistral", 7.0, "instruct", "Q5_K_M", "TheBloke/Mistral-7B-Instruct-v0.2-GGUF")
    for m in (
        decode("TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "mistral-7b-instruct-v0.2.Q5_K_M.gguf"),
        decode("TheBloke/Mistral-7B-Instruct-v0.2-GGUF/mistral-7b-instruct-v0.2.Q5_K_M.gguf"),
    ):
        assert (m.family, m.parameters_b, m.variant, m.quantization, m.repo) == want
        assert m.file == "mistral-7b-instruct-v0.2.Q5_K_M.gguf" and m.tags == ("v0.2",)
    bare = decode("SmolLM2-135M-Instruct.Q8_0.gguf")
    assert (bare.family, bare.parameters_b, bare.quantization) == ("smollm2", 0.135, "Q8_0")
    assert decode("TheBloke/Mistral-7B-Instruct-v0.2-GGUF").quantization_assumed == "Q4_K_M"


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("::", "more than one ':'"),
        (":", "lacks a model name"),
        (":8b", "lacks a model name"),
        ("llama3:", "lacks a model name or a tag"),
        ("a:b:c", "more than one ':'"),
        ("x" * 5000, "characters"),
        ("llama 3; rm -rf /", "not a model name"),
    ],
)
def test_decode_garbage_raises_a_clear_user_error(bad: str, words: str) -> None:
    with pytest.raises(ModelNameError, match=words) as err:
        decode(bad)
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
    assert len(str(err.value)) < 200  # one line, never echoes a huge input back


def test_unrecognised_words_give_params_none_not_a_guess() -> None:
    m = decode("my-custom-model")
    assert (m.family, m.parameters_b) == ("my-custom-model", None)
    with pytest.raises(ModelNameError, match="size is unknown"):
        estimate_memory(m, 4096)
    assert estimate_memory(m, 4096, parameters_b=7.0).total_gb > 4  # the server's parameter_size


def test_memory_llama31_8b_q4_k_m_at_8k() -> None:
    e = estimate_memory(decode("llama3.1:8b-instruct-q4_K_M"), 8192)
    assert e.bits_per_weight == 4.85
    assert 4.6 < e.weights_gb < 5.2
    assert 0.9 < e.kv_cache_gb < 1.2  # 2 * 32 layers * 8 kv heads * 128 * 8192 tokens * 2 bytes
    assert e.overhead_gb >= 0.3
    assert e.total_gb == pytest.approx(e.weights_gb + e.kv_cache_gb + e.overhead_gb)
    assert 5.5 < e.total_gb < 7.5
    assert any("Llama-3-8B" in a for a in e.assumptions)  # architecture taken from the table, and said so


def test_memory_with_server_arch_and_scaling() -> None:
    info = {
        "general.architecture": "qwen2",
        "qwen2.block_count": 28,
        "qwen2.attention.head_count_kv": 2,
        "qwen2.attention.head_count": 12,
        "qwen2.embedding_length": 1536,
    }
    arch = Arch.from_modelinfo(info)
    assert arch == Arch(28, 2, 128)
    m = decode("deepseek-r1:1.5b-qwen-distill-q4_K_M")
    e = estimate_memory(m, 4096, arch=arch)
    assert e.assumptions == []  # quantization in the name, architecture from the server
    assert estimate_memory(m, 8192, arch=arch).kv_cache_gb == pytest.approx(2 * e.kv_cache_gb)
    assert Arch.from_modelinfo({"general.architecture": "llama"}) is None
    with pytest.raises(ModelNameError):
        estimate_memory(m, 0)


def test_unknown_quantization_is_an_assumption_that_is_noted() -> None:
    e = estimate_memory(decode("llama3.1:8b"), 2048)
    assert e.bits_per_weight == 4.85 and "assumed Q4_K_M" in e.assumptions[0]
    hf = estimate_memory(decode("HuggingFaceTB/SmolLM2-1.7B-Instruct"), 2048)
    assert hf.bits_per_weight == 16 and "assumed BF16" in hf.assumptions[0]
    odd = dataclasses.replace(decode("llama3.1:8b"), quantization="Q4_0_4_8")
    e = estimate_memory(odd, 2048)
    assert e.bits_per_weight == 4.5 and any("no bits/weight known for Q4_0_4_8" in a for a in e.assumptions)


def test_bits_per_weight_table() -> None:
    t = names.BITS_PER_WEIGHT
    assert (t["Q4_0"], t["Q8_0"], t["Q4_K_M"], t["Q6_K"], t["F16"], t["BF16"], t["F32"]) == (
        4.5, 8.5, 4.85, 6.56, 16, 16, 32
    )  # fmt: skip
    assert all(1 < v <= 32 for v in t.values()) and t["IQ2_XS"] < t["IQ4_XS"] < t["Q4_K_M"]


def test_fits_phrases() -> None:
    e = estimate_memory(decode("llama3.1:8b"), 8192)  # ~6.5 GB
    assert fits(e, 24, 64) == "Fits on the GPU: needs ~6.5 GB of 24.0 GB."
    offload = fits(e, 4, 32)
    assert offload.startswith("Does not fit the GPU") and "CPU offload" in offload and "4.0 GB" in offload
    assert "RAM" in fits(e, None, 32) and "slowly" in fits(e, None, 32)
    nope = fits(e, 2, 2)
    assert nope.startswith("Does not fit:") and "~6.5 GB" in nope and "RAM has 2.0 GB" in nope
    assert fits(e, None, 1).startswith("Does not fit:")
    assert "unknown" in fits(e, None, None)


def test_describe_deepseek_r1() -> None:
    m = decode("deepseek-r1:1.5b-qwen-distill-q4_K_M")
    text = describe(m, estimate_memory(m, 8192), gpu_gb=8, cpu_gb=16)
    for s in ("deepseek-r1", "1.5B", "Q4_K_M", "GB", "qwen", "4.85 bits/weight", "8,192", "Fits on the GPU"):
        assert s in text
    assert len(text.splitlines()) >= 5


def test_describe_without_estimate_or_size() -> None:
    text = describe(decode("llama3"))
    assert "parameters: unknown" in text and "assumed Q4_K_M" in text and "memory: unknown" in text
    moe = describe(decode("mixtral:8x7b"))
    assert "46.7B" in moe and "mixture of experts" in moe


def test_doctests() -> None:
    result = doctest.testmod(names)
    assert result.failed == 0 and result.attempted >= 8
