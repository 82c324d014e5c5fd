"""What a model costs: parameter counts, FLOPs against torch's FlopCounterMode, memory, the roofline's
operations, hardware peaks, MFU in the trainer, and the errors a user can cause."""
import json
import time

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from transformerkit import PRESETS, get_preset
from transformerkit.analysis import (
    HARDWARE,
    Op,
    analyze,
    forward_flops,
    kv_cache_bytes_per_token,
    lookup_hardware,
    measure_hardware,
    memory,
    mfu,
    operations,
    parameter_breakdown,
    training_flops_per_token,
)
from transformerkit.errors import ConfigError
from transformerkit.models import MODELS, build
from transformerkit.training import TrainConfig, train

# ----------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_analytic_parameter_count_equals_the_built_model(name):
    with torch.device("meta"):
        model = build(name)
    analytic = parameter_breakdown(name)                      # from the config alone
    assert analytic["total"] == model.num_parameters()
    assert analytic == parameter_breakdown(model)             # and component by component


@pytest.mark.parametrize("task", sorted(task for family, task in MODELS if family == "bert"))
def test_bert_heads_are_counted_for_every_task(task):
    config = get_preset("bert-tiny")
    with torch.device("meta"):
        model = build(config, task=task)
    assert parameter_breakdown(config, task=task) == parameter_breakdown(model)


def test_components_are_where_they_belong():
    gpt2 = parameter_breakdown("gpt2")
    assert gpt2["token_embeddings"] == 50257 * 768 and gpt2["position_embeddings"] == 1024 * 768
    assert gpt2["heads"] == 0                                 # the LM head is the tied token table
    bert = parameter_breakdown("bert-base")
    assert bert["segment_embeddings"] == 2 * 768 and bert["heads"] == 768 * 768 + 768   # the pooler
    t5 = parameter_breakdown("t5-small")
    assert t5["relative_position_bias"] == 2 * 32 * 8 and t5["position_embeddings"] == 0
    assert parameter_breakdown("t5-v1_1-small")["heads"] == 32128 * 512       # untied output layer
    bart = parameter_breakdown("bart-base")                  # final_logits_bias is a buffer, not counted
    assert bart["heads"] == 0 and bart["position_embeddings"] == 2 * 1026 * 768


GPT3_TABLE_2_1 = {"gpt3-125m": 125e6, "gpt3-350m": 350e6, "gpt3-760m": 760e6, "gpt3-1.3b": 1.3e9,
                  "gpt3-2.7b": 2.7e9, "gpt3-6.7b": 6.7e9, "gpt3-13b": 13e9, "gpt3-175b": 175e9}


@pytest.mark.parametrize("name", sorted(GPT3_TABLE_2_1))
def test_gpt3_sizes_match_the_paper(name):
    """Brown et al. 2020, Table 2.1 (rounded counts): within 2%."""
    assert parameter_breakdown(name)["total"] == pytest.approx(GPT3_TABLE_2_1[name], rel=0.02)


# ----------------------------------------------------------------------------- FLOPs

def measured_flops(model, B, S, T, backward):
    """FlopCounterMode's count of a forward (and backward) pass. SDPA is forced onto its math path: on a
    CPU the fused kernel (_scaled_dot_product_flash_attention_for_cpu) is not counted at all; the math
    path's matmuls are, with the full T x T square under a causal mask, as FlopCounterMode's formula for
    the fused GPU kernels counts it too."""
    ids = torch.randint(4, 50, (B, S))
    kwargs = {"input_ids": ids}
    if model.is_encoder_decoder:
        kwargs["decoder_input_ids"] = torch.randint(4, 50, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(**kwargs)
        if backward:
            y = out.logits if out.logits is not None else out.hidden_states
            loss = y.float().sum()
            if getattr(out, "pooler_output", None) is not None:
                loss = loss + out.pooler_output.sum()
            loss.backward()
    return counter.get_total_flops()


FLOP_CASES = [
    ("gpt2-tiny", {}),
    ("gpt2-tiny", dict(d_model=128, n_layer=3, n_head=8, d_ff=512)),     # small
    ("gpt1-tiny", {}),
    ("bert-tiny", {}),
    ("bert-tiny", dict(d_model=128, n_layer=3, n_head=8, d_ff=512)),
    ("transformer-tiny", {}),
    ("transformer-tiny", dict(d_model=128, n_layer=2, n_decoder_layer=3, d_ff=512)),
    ("t5-tiny", {}),
    ("t5-tiny", dict(activation="gated-gelu_tanh", tie_embeddings=False)),
    ("bart-tiny", {}),
    ("llama-tiny", {}),                                                   # GQA: 4 query heads, 2 KV heads
    ("llama-tiny", dict(n_kv_head=1, d_head=24, tie_embeddings=False)),  # MQA, heads wider than d_model / n_head
]


@pytest.mark.parametrize("name,changes", FLOP_CASES)
def test_flops_match_flop_counter(name, changes):
    model = build(name, **{"vocab_size": 1000, **changes}).eval()
    B, S, T = 2, 24, 16
    target = T if model.is_encoder_decoder else None
    analytic = forward_flops(model.config, B, S, target, causal_attention="full")
    assert analytic == pytest.approx(measured_flops(model, B, S, T, backward=False), rel=0.02)
    assert 3 * analytic == pytest.approx(measured_flops(model, B, S, T, backward=True), rel=0.02)


def test_causal_average_halves_the_attention_term():
    c = get_preset("gpt2")
    full = forward_flops(c, 1, 1024, causal_attention="full")
    average = forward_flops(c, 1, 1024)
    attention_full = 1024 * 12 * 4 * 768 * 1024              # 2 x 2 x n_layer x T x d_attn per token
    assert full - average == pytest.approx(attention_full * (1 - 1025 / 2 / 1024))
    # Kaplan et al. 2020: 2 N + 2 n_layer n_ctx d_attn per token, N non-embedding, plus the LM head
    n = parameter_breakdown(c)
    non_embedding = n["total"] - n["token_embeddings"] - n["position_embeddings"]
    kaplan = 2 * non_embedding + 2 * 12 * 1024 * 768 + 2 * 768 * 50257
    assert average / 1024 == pytest.approx(kaplan, rel=0.01)
    assert training_flops_per_token(c, 1024) == pytest.approx(3 * average / 1024)


# ----------------------------------------------------------------------------- memory

@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny", "llama-tiny"])
def test_kv_cache_bytes_match_an_allocated_cache(name):
    model = build(name, vocab_size=100).to(torch.bfloat16).eval()
    B, new = 3, 7
    state, _ = model.decode_init(torch.randint(4, 50, (B, 5)), None, max_new_tokens=new)
    cache = state.cache
    allocated = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
    positions = cache.max_len
    assert allocated == kv_cache_bytes_per_token(model.config, "bf16") * B * positions


def test_kv_cache_per_token_with_and_without_gqa():
    """SmolLM2-135M: 30 layers x 2 (K, V) x 3 KV heads x 64 x 2 bytes = 23,040 bytes per token in bf16; with a
    K and V per query head (9) three times as much. GPT-2 small: 2 x 12 x 768 x 2 = 36,864."""
    m = memory("smollm2-135m", seq=1024)
    assert m["kv_cache_per_token"] == 30 * 2 * 3 * 64 * 2 == 23_040
    assert m["kv_cache_per_token_without_gqa"] == 3 * m["kv_cache_per_token"]
    assert memory("llama-3-8b")["kv_cache_per_token_without_gqa"] == 4 * memory("llama-3-8b")["kv_cache_per_token"]
    assert "kv_cache_per_token_without_gqa" not in memory("gpt2")
    assert memory("gpt2")["kv_cache_per_token"] == 36_864


def test_memory_of_gpt2():
    m = memory("gpt2", batch=1, seq=1024, dtype="bf16")
    n = 124_439_808
    assert m["weights"] == 2 * n and m["gradients"] == 2 * n
    assert m["weights"] + m["gradients"] + m["optimizer"] == 16 * n          # ZeRO §3.1: 16 bytes/param
    assert memory("gpt2", dtype="fp32")["optimizer"] == 8 * n                # no master copy in fp32
    assert m["kv_cache_per_token"] == 2 * 12 * 768 * 2
    # Korthikanti et al. 2022: 34 h + 5 a s bytes per layer and token (16-bit, d_ff = 4h), plus logits
    assert m["activations_per_token"] == 12 * (34 * 768 + 5 * 12 * 1024) + 2 * 50257
    assert m["activations_per_token_fused_attention"] < m["activations_per_token"]
    assert m["activations"] == m["activations_per_token"] * 1024


# ----------------------------------------------------------------------------- operations

def test_operations_intensity_decode_is_low_training_is_high():
    train_ops = operations("gpt3-175b", batch=8, seq=2048, dtype="bf16", phase="training")
    decode_ops = operations("gpt3-175b", batch=1, seq=2048, dtype="bf16", phase="decode")
    assert all(isinstance(op, Op) and op.flops > 0 and op.bytes > 0 for op in train_ops + decode_ops)
    names = [op.name for op in train_ops]
    assert names == ["qkv_projection", "attention_scores", "attention_weighted_sum", "out_projection",
                     "ffn_in", "ffn_out", "lm_head"]
    matmuls = [op for op in train_ops if "attention" not in op.name]
    assert min(op.intensity for op in matmuls) > 1000                       # far right of any ridge point
    assert max(op.intensity for op in decode_ops) < 2                        # batch 1: about 1 FLOP/byte
    ridge = HARDWARE["H100-SXM"]["flops"]["bf16"] / HARDWARE["H100-SXM"]["bandwidth"]
    assert all(op.intensity < ridge for op in decode_ops)                    # memory-bound
    ffn = next(op for op in decode_ops if op.name == "ffn_in")
    assert ffn.flops == 2 * 12288 * 4 * 12288 and ffn.intensity == pytest.approx(1.0, rel=0.01)


def test_encoder_decoder_operations_have_cross_attention():
    names = [op.name for op in operations("t5-v1_1-small", 2, 64, phase="decode")]
    assert "cross_attention_scores" in names and "ffn_gate" in names and "cross_kv_projection" not in names


# ----------------------------------------------------------------------------- analyze

def test_analyze_puts_it_together():
    r = analyze("gpt2", batch=1, seq=1024)
    assert r["parameters"]["total"] == 124_439_808
    assert r["flops_per_token"]["training"] == pytest.approx(3 * r["flops_per_token"]["forward"])
    assert {"training", "decode"} <= set(r["operations"])
    json.dumps({k: v for k, v in r.items() if k != "operations"})           # printable as JSON
    assert analyze("t5-small", seq=128)["target_seq"] == 128
    assert analyze("rnn-tiny")["flops_per_token"] is None
    assert "decode" not in analyze("bert-tiny")["operations"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(model_or_preset="gpt9"), "unknown model"),
    (dict(model_or_preset="no/such/folder"), "unknown model"),
    (dict(model_or_preset="gpt2", batch=0), "batch=0"),
    (dict(model_or_preset="gpt2", seq=0), "seq=0"),
    (dict(model_or_preset="gpt2", seq=2048), "beyond"),
    (dict(model_or_preset="bert-tiny", seq=129), "beyond"),
    (dict(model_or_preset="gpt2", dtype="int3"), "dtype"),
])
def test_analyze_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        analyze(**kwargs)


def test_other_errors():
    with pytest.raises(ConfigError, match="phase"):
        operations("gpt2", phase="inference")
    with pytest.raises(ConfigError, match="no decoding step"):
        operations("bert-tiny", phase="decode")
    with pytest.raises(ConfigError, match="peak_flops"):
        mfu(1e9, 100, 0)
    with pytest.raises(ConfigError, match="peak_flops"):
        TrainConfig(peak_flops=-1)


# ----------------------------------------------------------------------------- hardware and MFU

def test_hardware_table_and_names():
    for entry in HARDWARE.values():
        assert entry["flops"]["bf16"] is None or entry["flops"]["bf16"] > entry["flops"]["fp32"] > 0
        assert entry["bandwidth"] > 0 and entry["memory"] > 0 and entry["source"].startswith("datasheet")
    assert HARDWARE["H100-SXM"]["flops"]["bf16"] == pytest.approx(989.5e12)
    assert lookup_hardware("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert lookup_hardware("NVIDIA H100 PCIe") == "H100-PCIe"
    assert lookup_hardware("NVIDIA H200") == "H200"
    assert lookup_hardware("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert lookup_hardware("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert lookup_hardware("NVIDIA A10") == "A10" and lookup_hardware("NVIDIA L4") == "L4"
    assert lookup_hardware("Some GPU") is None


def test_measure_hardware_is_quick_and_positive():
    start = time.perf_counter()
    hw = measure_hardware(seconds=0.3, size=128, copy_bytes=1 << 20, device="cpu")
    assert time.perf_counter() - start < 2
    assert hw["flops"]["fp32"] > 0 and hw["flops"]["bf16"] > 0 and hw["bandwidth"] > 0 and hw["memory"] > 0


def test_mfu_is_logged_by_the_trainer(tmp_path):
    model = build("gpt2-tiny", vocab_size=32, d_model=32, n_layer=1, n_head=2, d_ff=64, max_position=9)
    data = torch.randint(0, 32, (16, 9))
    peak = 1e12
    config = TrainConfig(max_steps=2, batch_size=2, block_size=8, log_interval=2, warmup_steps=1,
                         device="cpu", out_dir=str(tmp_path), peak_flops=peak)
    train(model, data, None, config)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    expected = mfu(training_flops_per_token(model.config, 8), row["tokens_per_s"], peak)
    assert row["mfu"] == pytest.approx(expected)
    assert expected == pytest.approx(training_flops_per_token(model.config, 8) * row["tokens_per_s"] / peak)


def test_cli_analyze_roofline_and_errors(tmp_path, capsys):
    from transformerkit.cli import main

    assert main(["analyze", "gpt2-tiny", "--seq", "64", "--hardware", "H100-SXM",
                 "--roofline", str(tmp_path / "roof.png"), "--flops-share", str(tmp_path / "share.png")]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "H100-SXM ridge point (bf16)" in out
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("roof.png", "roof.svg", "share.png", "share.svg"))
    for argv, message in ((["analyze", "no-such-model"], "unknown model"),
                          (["analyze", "gpt2-tiny", "--batch", "0"], "batch=0 must be at least 1"),
                          (["analyze", "gpt2-tiny", "--seq", "4096"], "beyond"),
                          (["analyze", "gpt2-tiny", "--hardware", "TPU-v9"], "unknown hardware"),
                          (["viz", "curves", str(tmp_path)], "metrics.jsonl")):
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv
