"""Weight-only int8 / int4 linear layers on torch's CPU kernels: each computes what its dequantized float
weight computes, the quantization error is what the format allows, and bad requests are refused."""
import copy

import pytest
import torch
from torch import nn

import transformerkit as tk
from random_weights import randomize_
from transformerkit.errors import ConfigError
from transformerkit.quantization import Int4Linear, Int8Linear


def float_twin(quantized: nn.Module, reference: nn.Module) -> nn.Module:
    """`reference` (the float model) with every quantized layer's weight replaced by what that layer dequantizes
    to: the float model the quantized one should compute."""
    twin = copy.deepcopy(reference)
    layers = dict(quantized.named_modules())
    for name, module in twin.named_modules():
        if isinstance(layers.get(name), (Int8Linear, Int4Linear)):
            module.weight = nn.Parameter(layers[name].dequantized().clone(), requires_grad=False)
    return twin


@pytest.mark.parametrize("scheme,group_size", [("int8", 64), ("int4", 32), ("int4", 64), ("int4", 128)])
@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])
def test_quantized_model_computes_its_dequantized_weights(preset, scheme, group_size):
    # Random biases and norm gains too (the default init makes them 0 and 1, which would hide a dropped bias).
    model = randomize_(tk.build(preset, d_model=128, n_head=4, d_ff=256), only_1d=True).eval().requires_grad_(False)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    reference = copy.deepcopy(model)
    tk.quantize(model, scheme, group_size=group_size)
    kinds = {type(m) for m in model.modules()}
    assert (Int8Linear if scheme == "int8" else Int4Linear) in kinds and nn.Linear not in kinds
    # torch's int kernels run on bf16 activations: the same weights as the float twin, up to bf16 rounding.
    out = model(ids).logits
    twin = float_twin(model, reference)(ids).logits
    torch.testing.assert_close(out, twin, atol=2e-2 * float(twin.abs().max()), rtol=0)
    # The quantization error is small next to the logits (int4 more than int8).
    error = (out - reference(ids).logits).abs().max() / reference(ids).logits.abs().max()
    assert error < (0.05 if scheme == "int8" else 0.3)


def test_int8_and_int4_round_trip_the_weights():
    torch.manual_seed(0)
    linear = nn.Linear(256, 64, bias=True).requires_grad_(False)
    q8 = Int8Linear.from_linear(linear)
    step8 = linear.weight.abs().amax(1, keepdim=True) / 127
    assert ((q8.dequantized() - linear.weight).abs() <= step8 / 2 + 1e-7).all()   # half a step per weight
    q4 = Int4Linear.from_linear(linear, 32)
    groups = linear.weight.reshape(64, 8, 32)
    step4 = ((groups.amax(-1) - groups.amin(-1)) / 15)[..., None]
    assert ((q4.dequantized().reshape(64, 8, 32) - groups).abs() <= step4 / 2 + 1e-6).all()
    assert q4.codes().min() >= 0 and q4.codes().max() <= 15


def test_lm_head_can_stay_in_float():
    model = tk.build("llama-tiny").eval().requires_grad_(False)
    tk.quantize(model, "int8", lm_head=False)
    assert type(model.lm_head) is nn.Linear and model.quantization["lm_head"] is False


def test_bad_requests_are_refused():
    model = tk.build("gpt2-tiny")
    with pytest.raises(ConfigError, match="training mode"):
        tk.quantize(model, "int8")
    model.eval()
    with pytest.raises(ConfigError, match="require gradients"):
        tk.quantize(model, "int8")
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="group_size=16 .* 32, 64, 128, 256"):
        tk.quantize(model, "int4", group_size=16)
    with pytest.raises(ConfigError, match="unknown quantization"):
        tk.quantize(model, "int3")
    tk.quantize(model, "int4", group_size=32)
    with pytest.raises(ConfigError, match="already quantized"):
        tk.quantize(model, "int8")
    with pytest.raises(ConfigError, match="CPU kernels only.*meta"):
        model.lm_head(torch.zeros(1, 64, device="meta"))


def test_a_model_off_the_cpu_is_refused():
    model = tk.build("gpt2-tiny").eval().requires_grad_(False).to("meta")
    with pytest.raises(ConfigError, match="CPU kernels; the model is on meta"):
        tk.quantize(model, "int4", group_size=32)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_quantized_model_saves_and_loads(tmp_path, scheme):
    model = randomize_(tk.build("gpt2-tiny", d_ff=256), only_1d=True).eval().requires_grad_(False)
    tk.quantize(model, scheme, group_size=32)
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    model.save_pretrained(tmp_path / "q")
    loaded = tk.load(tmp_path / "q")
    assert loaded.quantization == model.quantization
    assert {type(m) for m in loaded.modules()} == {type(m) for m in model.modules()}
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_int8_head_under_int4_layers():
    """lm_head="int8": the layers in int4, the LM head in int8 (as llama.cpp keeps the output matrix in Q8_0)."""
    model = tk.build("llama-tiny", d_ff=256).eval().requires_grad_(False)
    tk.quantize(model, "int4", group_size=32, lm_head="int8")
    assert isinstance(model.lm_head, Int8Linear)
    assert all(isinstance(m, Int4Linear) for n, m in model.named_modules() if n.endswith(("qkv", "w_1", "w_2")))
    with pytest.raises(ConfigError, match="lm_head must be"):
        tk.quantize(tk.build("llama-tiny").eval().requires_grad_(False), "int4", 32, lm_head="int2")


def test_gguf_q4_weights_load_as_int4_codes_without_a_float_round_trip():
    """SmolLM2's GGUF stores the block weights as Q4_1 in blocks of 32: loaded with quantize="int4", group_size=32,
    every int4 layer holds the file's codes, scales and zeros themselves, so it computes exactly the weights
    the fp32 load dequantizes (the LM head, Q8_0 in the file, is quantized from its floats)."""
    from transformerkit.interop.gguf import open_gguf, q4_codes

    quantized = tk.load("smollm2-135m-instruct", quantize="int4", group_size=32)
    reference = tk.load("smollm2-135m-instruct")
    layers = dict(quantized.named_modules())
    floats = dict(reference.named_modules())
    checked = 0
    for name, module in layers.items():
        if isinstance(module, Int4Linear) and name != "lm_head":
            assert torch.equal(module.dequantized(), floats[name].weight), name
            checked += 1
    assert checked == 30 * 5    # qkv, out, and the gated MLP's w_1, w_gate, w_2, per layer
    # One layer's codes are the file's bytes.
    gguf = next(tk.fetch("smollm2-135m-instruct").glob("*.gguf"))
    down = next(t for t in open_gguf(gguf).tensors if t.name == "blk.0.ffn_down.weight")
    codes, scales, zeros = q4_codes(down)
    assert torch.equal(layers["transformer.h.0.ffn.w_2"].codes(), codes)
    assert torch.equal(layers["transformer.h.0.ffn.w_2"].scales, scales)


def test_quantize_flag_on_generate_eval_and_serve(tmp_path, capsys):
    from transformerkit.cli import main
    from transformerkit.serving import load_served

    model = tk.build("gpt2-tiny", d_ff=256)
    model.save_pretrained(tmp_path / "ckpt")
    args = [str(tmp_path / "ckpt"), "--tokenizer", "gpt2"]
    assert main(["generate", *args, "--prompt", "Hi", "--greedy", "--max-new-tokens", "4", "--no-stream",
                 "--quantize", "int4", "--group-size", "32"]) == 0
    (tmp_path / "text.txt").write_text("the cat sat on the mat . " * 20)
    assert main(["eval", *args, "--task", "perplexity", "--data", str(tmp_path / "text.txt"), "--quantize", "int8",
                 "--out", str(tmp_path / "ppl.json")]) == 0
    assert main(["generate", *args, "--prompt", "Hi", "--quantize", "int4", "--group-size", "16"]) == 1
    assert "group_size=16" in capsys.readouterr().err
    served, _, _ = load_served("gpt2-tiny", quantize="int8")
    assert isinstance(served.lm_head, Int8Linear) and not served.training


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_int_kernels_compute_the_dequantized_weights(dtype):
    """torch's int kernels (bf16 activations) against the float matmul on the dequantized weight, for a decoding
    step's few rows and a prompt's many: the same weights, up to bf16 rounding; the output in the input's dtype."""
    torch.manual_seed(0)
    linear = nn.Linear(256, 48, bias=True).requires_grad_(False).to(dtype)
    for layer in (Int8Linear.from_linear(linear), Int4Linear.from_linear(linear, 64)):
        for rows in (1, 4, 64):
            x = torch.randn(rows, 256, dtype=dtype)
            y = layer(x)
            assert y.dtype == dtype
            expected = torch.nn.functional.linear(x.float(), layer.dequantized().float(), layer.bias.float())
            torch.testing.assert_close(y.float(), expected, atol=3e-2, rtol=3e-2)
        x = torch.randn(4, 16, 256, dtype=dtype)
        last = x[:, -1:]                                   # not contiguous: the LM head's input after a prompt
        assert torch.equal(layer(last), layer(last.contiguous()))
