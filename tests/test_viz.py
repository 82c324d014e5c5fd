"""The pictures: each writes a PNG and an SVG, and the numbers behind them are right."""
import json

import pytest
import torch

import transformerkit as tk
from transformerkit.analysis import Op
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import char_tokenizer
from transformerkit.viz import (attention_maps, classify, plot_attention, plot_curves, plot_flops_share,
                                plot_positions, plot_roofline, position_similarity, ridge_point, roofline_points)

TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer("the cat sat on a mat. le chat est assis")


def _written(files, min_bytes=5_000):
    assert sorted(f.suffix for f in files) == [".png", ".svg"]
    for f in files:
        assert f.stat().st_size > min_bytes, f
        assert not list(f.parent.glob(f".{f.name}.tmp*"))     # no temp files left behind
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bert_self_attention(tok, tmp_path):
    maps = attention_maps(tk.build("bert-tiny"), tok, TEXT)
    T = len(tok.encode(TEXT))
    assert maps.kind == "encoder" and maps.self_attention.shape == (2, 4, T, T) and maps.cross is None
    assert len(maps.tokens) == T
    torch.testing.assert_close(maps.self_attention.sum(-1), torch.ones(2, 4, T))
    assert maps.self_attention.triu(1).abs().sum() > 0            # bidirectional: reads the future too
    _written(plot_attention(maps, None, tmp_path / "bert.png"))
    with pytest.raises(ConfigError, match="cross-attention"):
        plot_attention(maps, None, tmp_path / "x.png", kind="cross")


def test_gpt_causal_attention(tok, tmp_path):
    maps = attention_maps(tk.build("gpt2-tiny"), tok, TEXT, layers=[-1])
    T = len(tok.encode(TEXT))
    assert maps.kind == "decoder" and maps.self_attention.shape == (1, 4, T, T) and maps.layers == [1]
    assert maps.self_attention.triu(1).abs().max() == 0           # nothing above the diagonal
    torch.testing.assert_close(maps.self_attention.sum(-1), torch.ones(1, 4, T))
    _written(plot_attention(maps, None, tmp_path / "gpt.svg"))
    with pytest.raises(ConfigError, match="layer 5"):
        attention_maps(tk.build("gpt2-tiny"), tok, TEXT, layers=[5])


@pytest.mark.parametrize("preset", ["transformer-tiny", "t5-tiny"])
def test_cross_attention(preset, tok, tmp_path):
    model = tk.build(preset)
    maps = attention_maps(model, tok, TEXT, target="le chat")
    S, T = len(tok.encode(TEXT, add_special_tokens=False)), len(tok.encode("le chat", add_special_tokens=False))
    assert maps.kind == "encoder-decoder"
    assert maps.cross.shape == (2, 4, T, S) and maps.self_attention.shape == (2, 4, T, T)
    assert maps.encoder.shape == (2, 4, S, S)
    torch.testing.assert_close(maps.cross.sum(-1), torch.ones(2, 4, T))
    assert maps.self_attention.triu(1).abs().max() == 0
    assert len(maps.decoder_tokens) == T and len(maps.tokens) == S
    _written(plot_attention(maps, None, tmp_path / "cross.png", kind="cross"))
    _written(plot_attention(maps, None, tmp_path / "enc.png", kind="encoder"))
    with pytest.raises(ConfigError, match="target"):
        attention_maps(model, tok, TEXT)


def test_plot_attention_of_raw_weights_caps_the_figure(tmp_path):
    weights = torch.softmax(torch.randn(6, 6, 48, 48), -1)       # too many tokens to label
    _written(plot_attention(weights, None, tmp_path / "big.png"))
    with pytest.raises(DataError, match="labels"):
        plot_attention(weights[0], ["a", "b"], tmp_path / "bad.png")


def test_positions(tmp_path):
    sim = position_similarity(64, 100)
    assert sim.shape == (100, 100)
    assert torch.equal(sim.argmax(1), torch.arange(100))          # every position is most similar to itself
    torch.testing.assert_close(sim.diagonal(), torch.full((100,), 32.0))
    assert sim[50, 49] == pytest.approx(float(sim[50, 51])) and sim[50, 51] > sim[50, 53]   # symmetric, falls off
    _written(plot_positions(tmp_path / "pos.png", d_model=64, n_positions=100))
    with pytest.raises(ConfigError, match="even"):
        position_similarity(63, 10)


def test_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 5.0 / s ** 0.3, "lr": 1e-3, "tokens_per_s": 1000.0 + s, "elapsed": s * 0.1}
            for s in range(10, 210, 10)]
    rows += [{"step": s, "val_loss": 5.2 / s ** 0.3, "elapsed": s * 0.1} for s in (50, 100, 150, 200)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _written(plot_curves(run, tmp_path / "curves.png"))
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "mfu": 0.3}) + "\n" for r in rows))
    _written(plot_curves(run / "metrics.jsonl", tmp_path / "curves_mfu.png"))


def test_curves_without_metrics(tmp_path):
    with pytest.raises(DataError, match=r"metrics\.jsonl.*tkit train"):
        plot_curves(tmp_path, tmp_path / "c.png")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        plot_curves(tmp_path, tmp_path / "c.png")



HW = {"name": "test GPU", "flops": {"bf16": 1000e12, "fp32": 60e12}, "bandwidth": 2e12}   # ridge 500 (bf16)


def test_roofline_classification(tmp_path):
    gemv, gemm, at_ridge = Op("decode matvec", 2e9, 1e9), Op("train matmul", 2e13, 1e10), Op("edge", 500e6, 1e6)
    assert ridge_point(HW) == 500 and ridge_point(HW, "fp32") == 30
    assert classify(gemv, HW) == "memory" and classify(gemm, HW) == "compute" and classify(at_ridge, HW) == "compute"
    assert classify(Op("mid", 100e6, 1e6), HW) == "memory" and classify(Op("mid", 100e6, 1e6), HW, "fp32") == "compute"
    points = {p["name"]: p for p in roofline_points([gemv, gemm], HW)}
    assert points["decode matvec"]["attainable"] == pytest.approx(2e12 * 2)           # bandwidth x intensity
    assert points["train matmul"]["attainable"] == pytest.approx(1000e12)            # the compute roof
    _written(plot_roofline({"training": [gemm, Op("attention", 4e12, 2e10)], "decoding": [gemv]}, HW,
                           tmp_path / "roof.png", title="test"))
    _written(plot_roofline([gemv, gemm], HW, tmp_path / "roof32.png", dtype="fp32"))
    with pytest.raises(ConfigError, match="fp8"):
        plot_roofline([gemv], HW, tmp_path / "x.png", dtype="fp8")
    with pytest.raises(DataError, match="bytes"):
        roofline_points([Op("zero", 1.0, 0.0)], HW)


def test_flops_share(tmp_path):
    points = [(t, 24 * t * t * 768, 16 * t * 768 ** 2, 8 * t * 768 ** 2) for t in (128, 256, 512, 1024, 2048, 4096)]
    _written(plot_flops_share(points, tmp_path / "share.png"))
    with pytest.raises(DataError):
        plot_flops_share([], tmp_path / "x.png")
