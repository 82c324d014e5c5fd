"""The pictures: each writes a PNG and an SVG, the numbers behind them are right, and the pictures
show them: the SVG's panels, heatmaps, titles, labels and marker colours, and PNG pixels that change
with the data."""
import html
import json
import re

import numpy as np
import pytest
import torch

import transformerkit as tk
from transformerkit.analysis import Op, memory
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import char_tokenizer
from transformerkit.viz import (
    KV_PRESETS,
    attention_maps,
    classify,
    kv_cache_comparison,
    plot_attention,
    plot_curves,
    plot_flops_share,
    plot_kv_cache,
    plot_positions,
    plot_roofline,
    plot_rotary,
    position_similarity,
    ridge_point,
    roofline_points,
    rotary_angles,
    rotary_frequencies,
)

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
    return files


def _svg(files) -> dict:
    """What the SVG of a figure holds: its panels (axes, colour bars included), raster images (one per
    heatmap and colour bar) and texts (matplotlib draws text as paths, preceded by the text as a comment)."""
    svg = next(f for f in files if f.suffix == ".svg").read_text()
    return {"axes": len(re.findall(r'<g id="axes_\d+"', svg)), "images": svg.count("<image"),
            "texts": [html.unescape(t) for t in re.findall(r"<!-- (.*?) -->", svg)], "svg": svg}


def _pixels(files) -> np.ndarray:
    from matplotlib.image import imread

    return imread(next(f for f in files if f.suffix == ".png"))           # (H, W, 4) floats


def test_bert_self_attention(tok, tmp_path):
    maps = attention_maps(tk.build("bert-tiny"), tok, TEXT)
    T = len(tok.encode(TEXT))
    assert maps.kind == "encoder" and maps.self_attention.shape == (2, 4, T, T) and maps.cross is None
    assert len(maps.tokens) == T
    torch.testing.assert_close(maps.self_attention.sum(-1), torch.ones(2, 4, T))
    assert maps.self_attention.triu(1).abs().sum() > 0            # bidirectional: reads the future too
    svg = _svg(_written(plot_attention(maps, None, tmp_path / "bert.png")))
    assert svg["images"] == svg["axes"] == 2 * 4 + 1              # a heatmap per layer and head, and a colour bar
    assert {"layer 0", "layer 1", "head 0", "head 3"} <= set(svg["texts"])
    assert f"self-attention: 2 layer(s) x 4 head(s), {T} x {T} tokens (rows: queries, columns: keys)" in svg["texts"]
    # token labels: across under each panel of the bottom row (4 heads), down beside each layer's first (2 layers)
    assert svg["texts"].count("c") == (4 + 2) * TEXT.count("c")
    with pytest.raises(ConfigError, match="cross-attention"):
        plot_attention(maps, None, tmp_path / "x.png", kind="cross")


def test_gpt_causal_attention(tok, tmp_path):
    maps = attention_maps(tk.build("gpt2-tiny"), tok, TEXT, layers=[-1])
    T = len(tok.encode(TEXT))
    assert maps.kind == "decoder" and maps.self_attention.shape == (1, 4, T, T) and maps.layers == [1]
    assert maps.self_attention.triu(1).abs().max() == 0           # nothing above the diagonal
    torch.testing.assert_close(maps.self_attention.sum(-1), torch.ones(1, 4, T))
    files = _written(plot_attention(maps, None, tmp_path / "gpt.svg"))
    svg = _svg(files)
    assert svg["images"] == svg["axes"] == 1 * 4 + 1
    assert "layer 1" in svg["texts"] and "layer 0" not in svg["texts"]          # the last layer only
    assert f"causal self-attention: 1 layer(s) x 4 head(s), {T} x {T} tokens (rows: queries, columns: keys)" \
        in svg["texts"]
    # the pixels follow the weights: uniform weights over the visible keys draw another picture
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(1, 4, T, T)
    again = _written(plot_attention(maps, None, tmp_path / "gpt-again.png"))
    other = _written(plot_attention(uniform, maps.tokens, tmp_path / "gpt-uniform.png",
                                    title=_title(svg["texts"], "causal self-attention")))
    assert np.array_equal(_pixels(files), _pixels(again))                     # same weights, same picture
    assert _pixels(files).shape == _pixels(other).shape
    assert not np.array_equal(_pixels(files), _pixels(other))
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
    cross = _svg(_written(plot_attention(maps, None, tmp_path / "cross.png", kind="cross")))
    assert cross["images"] == 2 * 4 + 1
    assert f"cross-attention (decoder reads the source): 2 layer(s) x 4 head(s), {T} x {S} tokens (rows: queries, " \
        "columns: keys)" in cross["texts"]
    assert "<start>" in cross["texts"]                             # decoder inputs label the rows
    enc = _svg(_written(plot_attention(maps, None, tmp_path / "enc.png", kind="encoder")))
    assert enc["images"] == 2 * 4 + 1
    assert f"encoder self-attention: 2 layer(s) x 4 head(s), {S} x {S} tokens (rows: queries, columns: keys)" \
        in enc["texts"]
    with pytest.raises(ConfigError, match="target"):
        attention_maps(model, tok, TEXT)


def test_plot_attention_of_raw_weights_caps_the_figure(tmp_path):
    weights = torch.softmax(torch.randn(6, 6, 48, 48), -1)       # too many tokens to label
    files = _written(plot_attention(weights, [f"w{i}" for i in range(48)], tmp_path / "big.png"))
    svg = _svg(files)
    assert svg["images"] == 6 * 6 + 1
    assert "self-attention: 6 layer(s) x 6 head(s), 48 x 48 tokens (rows: queries, columns: keys)" in svg["texts"]
    assert "w0" not in svg["texts"]                               # 48 labels would not be readable: none drawn
    assert max(_pixels(files).shape[:2]) <= 3000                  # at most ~3000 px a side
    with pytest.raises(DataError, match="labels"):
        plot_attention(weights[0], ["a", "b"], tmp_path / "bad.png")


def test_positions(tmp_path):
    sim = position_similarity(64, 100)
    assert sim.shape == (100, 100)
    assert torch.equal(sim.argmax(1), torch.arange(100))          # every position is most similar to itself
    torch.testing.assert_close(sim.diagonal(), torch.full((100,), 32.0))
    assert sim[50, 49] == pytest.approx(float(sim[50, 51])) and sim[50, 51] > sim[50, 53]   # symmetric, falls off
    files = _written(plot_positions(tmp_path / "pos.png", d_model=64, n_positions=100))
    svg = _svg(files)
    assert svg["images"] == svg["axes"] == 4                      # the table and the similarity, each with a colour bar
    assert {"sinusoidal encoding PE (100 x 64)", "similarity PE PE$^T$ (max 32 on the diagonal)", "position q",
            "position p"} <= set(svg["texts"])
    other = _written(plot_positions(tmp_path / "pos32.png", d_model=32, n_positions=100))
    assert "sinusoidal encoding PE (100 x 32)" in _svg(other)["texts"]
    assert _pixels(files).shape == _pixels(other).shape and not np.array_equal(_pixels(files), _pixels(other))
    with pytest.raises(ConfigError, match="even"):
        position_similarity(63, 10)


def test_rotary_frequencies_and_angles():
    for d_head, base in [(64, 10000.0), (64, 100000.0), (128, 500000.0), (8, 10.0)]:
        expected = torch.tensor([base ** (-2 * i / d_head) for i in range(d_head // 2)], dtype=torch.float64)
        torch.testing.assert_close(rotary_frequencies(d_head, base).double(), expected, rtol=1e-6, atol=0)
    # a larger base slows every pair but the first (theta_0 = 1 radian per position whatever the base)
    slow, fast = rotary_frequencies(64, 100000.0), rotary_frequencies(64, 10000.0)
    assert slow[0] == fast[0] == 1.0 and bool((slow[1:] < fast[1:]).all())
    assert bool((fast[1:] < fast[:-1]).all())                      # falls with the pair index
    cos = rotary_angles(16, 50, 10000.0)
    m, i = torch.arange(50, dtype=torch.float64)[:, None], torch.arange(8, dtype=torch.float64)
    assert cos.shape == (50, 8)
    torch.testing.assert_close(cos.double(), torch.cos(m * 10000.0 ** (-2 * i / 16)), rtol=0, atol=1e-5)
    assert torch.equal(cos[0], torch.ones(8))                      # position 0: no turn
    with pytest.raises(ConfigError, match="even"):
        rotary_frequencies(63)
    with pytest.raises(ConfigError, match="base"):
        rotary_angles(64, 10, base=1.0)


def test_plot_rotary(tmp_path):
    files = _written(plot_rotary(tmp_path / "rope.png", d_head=64, bases=(10000, 100000), n_positions=128,
                                 context=8192))
    svg = _svg(files)
    assert svg["axes"] == 1 + 2 + 1                                # frequencies, a heat map per base, a colour bar
    assert svg["images"] == 2 + 1
    # the legend counts the pairs slower than one turn per context: theta_i < 2 pi / 8192
    for base in (10000, 100000):
        slow = sum(base ** (-2 * i / 64) < 2 * np.pi / 8192 for i in range(32))
        assert f"base {base:,}: {slow} of 32 pairs turn < once in 8,192 tokens" in svg["texts"]
        assert f"cos(m θ$_i$), base {base:,}" in svg["texts"]
    assert {"rotary frequencies, d_head = 64", "2π / 8,192 (one turn per context)", "position m"} <= set(svg["texts"])
    # the heat maps follow the base: another base, another picture of the same size
    other = _written(plot_rotary(tmp_path / "rope-other.png", d_head=64, bases=(10000, 500000), n_positions=128,
                                 context=8192))
    assert "cos(m θ$_i$), base 500,000" in _svg(other)["texts"]
    assert _pixels(files).shape == _pixels(other).shape and not np.array_equal(_pixels(files), _pixels(other))
    three = _svg(_written(plot_rotary(tmp_path / "rope3.png", d_head=32, bases=(1e4, 1e5, 5e5), context=4096)))
    assert three["axes"] == 1 + 3 + 1 and three["images"] == 3 + 1
    assert "base 500,000: 8 of 16 pairs turn < once in 4,096 tokens" in three["texts"]
    with pytest.raises(ConfigError, match="base"):
        plot_rotary(tmp_path / "x.png", bases=())


def test_kv_cache_comparison():
    rows = kv_cache_comparison()
    assert [r["name"] for r in rows] == list(KV_PRESETS)
    for r in rows:
        assert r["bytes"] == memory(r["name"])["kv_cache_per_token"]
        # a key and a value per layer and KV head, 2 bytes each in bf16
        assert r["bytes"] == 2 * r["n_layer"] * r["n_kv_head"] * r["d_head"] * 2
        assert r["bytes_without_gqa"] == 2 * r["n_layer"] * r["n_head"] * r["d_head"] * 2
        assert r["bytes_per_context"] == r["bytes"] * r["context"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["gpt2"]["bytes"] == by_name["gpt2"]["bytes_without_gqa"] == 2 * 12 * 768 * 2   # 36 KiB
    assert by_name["llama-3-8b"]["bytes"] == 2 * 32 * 8 * 128 * 2                                 # 8 KV heads
    assert by_name["llama-3-8b"]["bytes_without_gqa"] == 4 * by_name["llama-3-8b"]["bytes"]     # 32 query heads
    assert by_name["llama-2-70b"]["bytes"] < by_name["llama-2-7b"]["bytes"]                     # GQA: 8 of 64
    assert by_name["smollm2-135m"]["n_kv_head"] == 3 and by_name["smollm2-135m"]["n_head"] == 9
    fp32 = kv_cache_comparison(["smollm2-135m"], dtype="fp32")[0]
    assert fp32["bytes"] == 2 * by_name["smollm2-135m"]["bytes"]
    with pytest.raises(ConfigError, match="bert"):
        kv_cache_comparison(["bert-base"])
    with pytest.raises(ConfigError, match="at least one"):
        kv_cache_comparison([])


def test_plot_kv_cache(tmp_path):
    files = _written(plot_kv_cache(tmp_path / "kv.png"))
    svg = _svg(files)
    texts = [t.strip() for t in svg["texts"]]
    assert svg["axes"] == 1 and "KV cache per token (bf16)" in texts
    assert set(KV_PRESETS) <= set(texts)                           # a bar per preset, named
    assert {"36 KiB: 12 heads", "512 KiB: 32 heads", "22.5 KiB: 3 KV heads for 9 query heads",
            "67.5 KiB without GQA", "128 KiB: 8 KV heads for 32 query heads", "512 KiB without GQA",
            "320 KiB: 8 KV heads for 64 query heads", "2,560 KiB without GQA"} <= set(texts)
    # a hatched "without GQA" bar behind each of the four GQA models, and one in the legend
    gqa = sum(r["n_kv_head"] != r["n_head"] for r in kv_cache_comparison())
    assert gqa == 4 and svg["svg"].count("fill: url(#") == gqa + 1
    mha = _svg(_written(plot_kv_cache(tmp_path / "kv-mha.png", presets=["gpt2", "llama-2-7b"], dtype="fp32")))
    assert {"72 KiB: 12 heads", "1,024 KiB: 32 heads", "KV cache per token (fp32)"} <= {t.strip() for t in mha["texts"]}
    assert mha["svg"].count("fill: url(#") == 1                    # the legend's only
    with pytest.raises(ConfigError, match="dtype"):
        plot_kv_cache(tmp_path / "x.png", dtype="fp7")


def test_tkit_viz_rotary_and_kv_cache(tmp_path, capsys):
    from transformerkit.cli import main

    assert main(["viz", "rotary", "--d-head", "32", "--bases", "10000", "500000", "--context", "4096",
                 "--out", str(tmp_path / "rope.png")]) == 0
    svg = _svg(_written([tmp_path / "rope.png", tmp_path / "rope.svg"]))
    assert {"rotary frequencies, d_head = 32", "base 500,000: 8 of 16 pairs turn < once in 4,096 tokens"} \
        <= set(svg["texts"])
    assert main(["viz", "kv-cache", "--out", str(tmp_path / "kv.png")]) == 0           # the default presets
    assert set(KV_PRESETS) <= set(_svg(_written([tmp_path / "kv.png", tmp_path / "kv.svg"]))["texts"])
    assert main(["viz", "kv-cache", "gpt2", "llama-3-70b", "--dtype", "fp32", "--out", str(tmp_path / "k.png")]) == 0
    texts = {t.strip() for t in _svg([tmp_path / "k.png", tmp_path / "k.svg"])["texts"]}
    assert {"gpt2", "llama-3-70b", "72 KiB: 12 heads", "640 KiB: 8 KV heads for 64 query heads"} <= texts
    assert "llama-2-7b" not in texts
    capsys.readouterr()
    assert main(["viz", "kv-cache", "bert-base", "--out", str(tmp_path / "b.png")]) == 1
    assert "bert-base is a bert model" in capsys.readouterr().err


def test_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 5.0 / s ** 0.3, "lr": 1e-3, "tokens_per_s": 1000.0 + s, "elapsed": s * 0.1}
            for s in range(10, 210, 10)]
    rows += [{"step": s, "val_loss": 5.2 / s ** 0.3, "elapsed": s * 0.1} for s in (50, 100, 150, 200)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = _svg(_written(plot_curves(run, tmp_path / "curves.png")))
    assert svg["axes"] == 2                                       # losses above, tokens/s below
    best = min(5.2 / s ** 0.3 for s in (50, 100, 150, 200))
    assert {"training curves: run", "training loss", "validation loss", f"best {best:.3f} @ 200", "tokens/s",
            "step"} <= set(svg["texts"])
    assert "MFU (%)" not in svg["texts"]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "mfu": 0.3}) + "\n" for r in rows))
    svg = _svg(_written(plot_curves(run / "metrics.jsonl", tmp_path / "curves_mfu.png")))
    assert svg["axes"] == 3 and "MFU (%)" in svg["texts"]         # MFU on a second axis beside tokens/s
    assert "30" in svg["texts"]                                   # 0.3 drawn as 30 %
    # only training rows: one panel less, and no validation line
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": r["step"], "loss": r["loss"]}) + "\n"
                                               for r in rows if "loss" in r))
    svg = _svg(_written(plot_curves(run, tmp_path / "curves_train.png")))
    assert svg["axes"] == 1 and "training loss" in svg["texts"] and "validation loss" not in svg["texts"]


def test_curves_without_metrics(tmp_path):
    with pytest.raises(DataError, match=r"metrics\.jsonl.*tkit train"):
        plot_curves(tmp_path, tmp_path / "c.png")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        plot_curves(tmp_path, tmp_path / "c.png")



def _marker_count(svg: str, colour: str) -> int:
    """Scatter markers (drawn as <use> of a marker path) filled with `colour`."""
    return len(re.findall(r'<use [^>]*style="fill: ' + colour, svg))


def _title(texts: list[str], start: str) -> str:
    return next(t for t in texts if t.startswith(start))


HW = {"name": "test GPU", "flops": {"bf16": 1000e12, "fp32": 60e12}, "bandwidth": 2e12}   # ridge 500 (bf16)


def test_roofline_classification(tmp_path):
    gemv, gemm, at_ridge = Op("decode matvec", 2e9, 1e9), Op("train matmul", 2e13, 1e10), Op("edge", 500e6, 1e6)
    assert ridge_point(HW) == 500 and ridge_point(HW, "fp32") == 30
    assert classify(gemv, HW) == "memory" and classify(gemm, HW) == "compute" and classify(at_ridge, HW) == "compute"
    assert classify(Op("mid", 100e6, 1e6), HW) == "memory" and classify(Op("mid", 100e6, 1e6), HW, "fp32") == "compute"
    points = {p["name"]: p for p in roofline_points([gemv, gemm], HW)}
    assert points["decode matvec"]["attainable"] == pytest.approx(2e12 * 2)           # bandwidth x intensity
    assert points["train matmul"]["attainable"] == pytest.approx(1000e12)            # the compute roof
    svg = _svg(_written(plot_roofline({"training": [gemm, Op("attention", 4e12, 2e10)], "decoding": [gemv]}, HW,
                                      tmp_path / "roof.png", title="test")))
    assert {"test", "memory roof: 2 TB/s x intensity", "compute roof: 1000 TFLOP/s (bf16)", "ridge 500 FLOP/byte",
            "training", "decoding", "train matmul", "attention", "decode matvec"} <= set(svg["texts"])
    # markers coloured by their side of the ridge: blue for the memory-bound matvec and attention (intensity
    # 2 and 200 < 500), red for the matmul (2000); one more of each in the legend
    assert _marker_count(svg["svg"], "#1f77b4") == 2 + 1 and _marker_count(svg["svg"], "#d62728") == 1 + 1
    svg = _svg(_written(plot_roofline([gemv, gemm], HW, tmp_path / "roof32.png", dtype="fp32")))
    assert {"roofline: test GPU (fp32)", "compute roof: 60 TFLOP/s (fp32)", "ridge 30 FLOP/byte"} <= set(svg["texts"])
    assert _marker_count(svg["svg"], "#1f77b4") == 1 + 1 and _marker_count(svg["svg"], "#d62728") == 1 + 1
    with pytest.raises(ConfigError, match="fp8"):
        plot_roofline([gemv], HW, tmp_path / "x.png", dtype="fp8")
    with pytest.raises(DataError, match="bytes"):
        roofline_points([Op("zero", 1.0, 0.0)], HW)


def test_flops_share(tmp_path):
    lengths = (128, 256, 512, 1024, 2048, 4096)
    points = [(t, 24 * t * t * 768, 16 * t * 768 ** 2, 8 * t * 768 ** 2) for t in lengths]
    svg = _svg(_written(plot_flops_share(points, tmp_path / "share.png")))
    # attention's share, 24 t^2 d / (24 t^2 d + 24 t d^2) = t / (t + d), is written above each point
    assert [t for t in svg["texts"] if t.endswith("%")] == [f"{100 * t / (t + 768):.0f}%" for t in lengths]
    assert {"where the FLOPs go as the sequence grows", "attention (QK$^T$, AV)", "feed-forward",
            "sequence length (tokens)"} <= set(svg["texts"])
    with pytest.raises(DataError):
        plot_flops_share([], tmp_path / "x.png")
