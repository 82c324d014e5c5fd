"""LLaMA against transformers' LlamaForCausalLM on random weights (GQA, MQA and MHA, tied and untied heads,
a non-default rope_theta, heads narrower than d_model / n_head), the layers it adds (rotary positions,
grouped-query attention, SwiGLU), its presets' parameter counts and its errors."""
from __future__ import annotations

import json

import pytest
import torch

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from transformerkit.errors import CheckpointError, ConfigError, GenerationError
from transformerkit.layers import RotaryPositions, apply_rotary

transformers = pytest.importorskip("transformers")

V, CONTEXT = 101, 64
PAD = 1
CASES = {   # name -> LlamaConfig fields
    "gqa-untied-theta": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                             rope_theta=500000.0),
    "mha-tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "mqa-wide-heads": dict(num_attention_heads=6, num_key_value_heads=1, head_dim=10, tie_word_embeddings=False,
                           rope_theta=30000.0),
}


def hf_llama(**fields):
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                      max_position_embeddings=CONTEXT, rms_norm_eps=1e-5, bos_token_id=2,
                                      eos_token_id=3, pad_token_id=PAD, **fields)
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    hf = randomize_(hf_llama(**CASES[request.param]), std=0.3).eval()
    assert not constant_tensors(hf)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    hf.generation_config = transformers.GenerationConfig(do_sample=False, num_beams=1)
    ours = tk.load(path)
    ours.generation_config = tk.GenerationConfig()
    return ours, hf, request.param


def prompt(T=6, B=2, seed=0):
    return torch.randint(4, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_config_comes_through(pair):
    ours, hf, name = pair
    c, h = ours.config, hf.config
    assert (c.family, c.n_head, c.kv_heads, c.d_head, c.rope_theta, c.tie_embeddings) == (
        "llama", h.num_attention_heads, h.num_key_value_heads, h.head_dim, h.rope_parameters["rope_theta"],
        h.tie_word_embeddings)
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_logits_match(pair):
    ours, hf, _ = pair
    ids = prompt(T=40)
    with torch.no_grad():
        theirs = hf(ids).logits
        mine = ours(ids).logits
    assert (mine - theirs).abs().max() < 1e-4


def test_padded_batch_logits_match(pair):
    """Right padding with an attention mask: the real positions give the same logits."""
    ours, hf, _ = pair
    ids = prompt(T=12, B=3)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask).logits
        mine = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (mine[real] - theirs[real]).abs().max() < 1e-4


@pytest.mark.parametrize("num_beams", [1, 4])
def test_greedy_and_beam_tokens_match(pair, num_beams):
    ours, hf, _ = pair
    ids = prompt(T=5, B=2, seed=3)
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                             num_beams=num_beams, eos_token_id=None, pad_token_id=PAD)
    mine = tk.generate(ours, ids, max_new_tokens=24, num_beams=num_beams, eos_token_id=None, pad_token_id=PAD)
    assert torch.equal(mine, theirs), (mine.tolist(), theirs.tolist())


def test_left_padded_greedy_matches(pair):
    """Left padding: positions count from each row's first real token, as transformers' generate does."""
    ours, hf, _ = pair
    ids = prompt(T=7, B=2, seed=5)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    ids[0, :3] = PAD
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, eos_token_id=None,
                             pad_token_id=PAD)
    mine = tk.generate(ours, ids, mask, max_new_tokens=16, eos_token_id=None, pad_token_id=PAD)
    assert torch.equal(mine, theirs), (mine.tolist(), theirs.tolist())


def test_saved_model_loads_back_into_transformers(pair, tmp_path):
    ours, hf, _ = pair
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["num_key_value_heads"] == ours.config.kv_heads
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = prompt(T=20)
    with torch.no_grad():
        assert (back(ids).logits - hf(ids).logits).abs().max() < 1e-5


def test_explicit_attention_path_with_gqa_equals_sdpa(pair):
    """need_weights=True runs Eq. 1 written out (key/value heads repeated for their groups)."""
    ours, _, _ = pair
    ids = prompt(T=16)
    with torch.no_grad():
        fused = ours(ids).logits
        explicit = ours(ids, need_weights=True)
    assert (explicit.logits - fused).abs().max() < 1e-4
    weights = explicit.attentions[0]["self"]
    assert weights.shape == (2, ours.config.n_head, 16, 16)
    assert torch.allclose(weights.sum(-1), torch.ones(()))


def test_kv_cache_holds_the_kv_heads_only(pair):
    ours, _, _ = pair
    state, _ = ours.decode_init(prompt(T=4), None, max_new_tokens=6)
    c = ours.config
    assert state.cache.k[0].shape == (2, c.kv_heads, 10, c.d_head)


# ----------------------------------------------------------------------------- the layers

def test_rotary_scores_depend_on_the_distance_only():
    """<R_m q, R_n k> = <q, R_(n-m) k> (Su et al. 2021, Eq. 16): shifting both positions keeps the score."""
    torch.manual_seed(0)
    rotary = RotaryPositions(d_head=16, base=10000.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        cos_m, sin_m = rotary(torch.tensor([[m]]), torch.float32)
        cos_n, sin_n = rotary(torch.tensor([[n]]), torch.float32)
        return (apply_rotary(q, cos_m, sin_m) * apply_rotary(k, cos_n, sin_n)).sum().item()

    assert score(3, 10) == pytest.approx(score(50, 57), abs=1e-4)
    assert score(3, 10) != pytest.approx(score(3, 11), abs=1e-3)
    cos, sin = rotary(torch.tensor([[0]]), torch.float32)     # position 0 is the identity
    assert torch.allclose(apply_rotary(q, cos, sin), q)


def test_rotary_frequencies_follow_the_base():
    """theta_i = base^(-2i/d): the first pair turns one radian per position, the last slowest."""
    for base in (1e4, 5e5):
        inv_freq = RotaryPositions(d_head=64, base=base).inv_freq
        assert inv_freq[0] == 1.0
        assert inv_freq[-1] == pytest.approx(base ** (-62 / 64), rel=1e-5)


def test_gqa_equals_mha_with_each_kv_head_repeated():
    """A GQA model computes what an MHA model does whose key/value heads are copies within each group."""
    torch.manual_seed(0)
    gqa = tk.build("llama-tiny", vocab_size=V).eval()            # 4 query heads, 2 key/value heads
    mha = tk.build("llama-tiny", vocab_size=V, n_kv_head=0).eval()
    c = gqa.config
    H, KV, D = c.n_head, c.kv_heads, c.d_head
    state = gqa.state_dict()
    for name, value in state.items():
        if name.endswith("self_attn.qkv.weight"):
            q, k, v = value.split([H * D, KV * D, KV * D])
            repeat = lambda w: w.view(KV, D, -1).repeat_interleave(H // KV, dim=0).reshape(H * D, -1)
            state[name] = torch.cat([q, repeat(k), repeat(v)])
    mha.load_state_dict(state)
    ids = prompt(T=12)
    with torch.no_grad():
        assert (gqa(ids).logits - mha(ids).logits).abs().max() < 1e-5


def test_swiglu_is_silu_gate_times_up():
    """FFN_SwiGLU(x) = (Swish(x W) * x V) W_2 (Shazeer 2020, Eq. 6): W is our w_1, V our w_gate."""
    ffn = tk.build("llama-tiny").transformer.h[0].ffn
    x = torch.randn(2, 3, 64)
    expected = ffn.w_2(torch.nn.functional.silu(ffn.w_1(x)) * ffn.w_gate(x))
    assert torch.allclose(ffn(x), expected)
    assert ffn.w_1.bias is None and ffn.w_gate.bias is None


# ----------------------------------------------------------------------------- presets and errors

@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2-360m", "smollm2-1.7b", "llama-2-7b", "llama-2-13b",
                                  "llama-2-70b", "llama-3-8b", "llama-3-70b"])
def test_preset_parameter_counts_equal_transformers(name):
    c = tk.get_preset(name)
    hf_config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads, tie_word_embeddings=c.tie_embeddings)
    with torch.device("meta"):
        theirs = sum(p.numel() for p in transformers.LlamaForCausalLM(hf_config).parameters())
        ours = tk.build(name).num_parameters()
    assert ours == theirs
    if name == "smollm2-135m":
        assert ours == 134_515_008


def test_kv_heads_that_do_not_divide_the_heads_are_refused(tmp_path):
    hf_llama(num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_key_value_heads"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="num_key_value_heads=3 does not divide num_attention_heads=4"):
        tk.load(tmp_path)
    with pytest.raises(ConfigError, match="n_kv_head=3 must divide n_head=4"):
        tk.build("llama-tiny", n_kv_head=3)


def test_rope_scaling_is_refused(tmp_path):
    hf_llama(num_attention_heads=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="rope scaling 'llama3'"):
        tk.load(tmp_path)


def test_a_prompt_beyond_the_context_is_refused():
    model = tk.build("llama-tiny", vocab_size=V, max_position=16).eval()
    with pytest.raises(GenerationError, match="context of 16"):
        model(prompt(T=17))
    with pytest.raises(GenerationError, match="context"):
        tk.generate(model, prompt(T=12), max_new_tokens=8)


def test_llama_takes_rotary_positions_only():
    with pytest.raises(ConfigError, match="positions"):
        tk.build("llama-tiny", positions="learned", rope_theta=10000.0)
    with pytest.raises(ConfigError, match="rope_theta"):
        tk.build("gpt2-tiny", rope_theta=5e5)
