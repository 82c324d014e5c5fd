"""The shared layers: attention (fused vs explicit, masks, KV cache), positions, norms, feed-forward,
blocks, and config errors. References are the paper's formulas written out, or `transformers`."""
from __future__ import annotations

import math

import pytest
import torch

import transformerkit as tk
from transformerkit import get_preset
from transformerkit.config import ModelConfig
from transformerkit.errors import ConfigError, GenerationError
from transformerkit.layers import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    KVCache,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    build_attention_mask,
    make_norm,
    sinusoidal_table,
)
from transformerkit.layers.positions import relative_position_bucket

ATOL = 1e-5


def tiny_config(**kw) -> ModelConfig:
    base = dict(family="gpt", vocab_size=97, d_model=32, n_layer=2, n_head=4, d_ff=64, max_position=64,
                dropout=0.0, attn_dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def randomize_(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values for every parameter (biases and norm gains too), so no mapping hides behind a zero or one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def attention(cross: bool = False, seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return randomize_(MultiHeadAttention(tiny_config(), cross=cross), seed=seed).eval()


def both_paths(attn, x, **kw):
    fused, no_weights = attn(x, need_weights=False, **kw)
    explicit, weights = attn(x, need_weights=True, **kw)
    assert no_weights is None and weights is not None
    return fused, explicit, weights


def check_weights(weights: torch.Tensor, allowed: torch.Tensor | None):
    """Rows are probability distributions, exactly zero where a key is masked."""
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-6, rtol=0)
    if allowed is not None:
        allowed = allowed.expand_as(weights)
        assert bool((weights[~allowed] == 0).all())
        assert bool((weights[allowed] > 0).all())


# --- attention: fused vs explicit --------------------------------------------------------------------

def test_self_attention_fused_equals_explicit():
    attn = attention()
    x = torch.randn(2, 7, 32)
    fused, explicit, weights = both_paths(attn, x)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    check_weights(weights, None)
    assert weights.shape == (2, 4, 7, 7)


def test_causal_attention_fused_equals_explicit():
    attn = attention()
    x = torch.randn(2, 6, 32)
    mask, is_causal = build_attention_mask(6, 6, causal=True)
    assert mask is None and is_causal  # the plain causal square goes to the fused kernel's causal path
    fused, explicit, weights = both_paths(attn, x, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    check_weights(weights, torch.ones(6, 6, dtype=torch.bool).tril())
    # Causal: a change at the last position leaves every earlier output alone.
    x2 = x.clone()
    x2[:, -1] += 1.0
    changed, _ = attn(x2, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(changed[:, :-1], fused[:, :-1], atol=ATOL, rtol=0)
    assert (changed[:, -1] - fused[:, -1]).abs().max() > 1e-3


def test_causal_attention_with_key_padding():
    attn = attention()
    x = torch.randn(3, 6, 32)
    padding = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # left and right padded
    mask, is_causal = build_attention_mask(6, 6, key_padding=padding, causal=True)
    assert mask.dtype == torch.bool and not is_causal
    fused, explicit, weights = both_paths(attn, x, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    check_weights(weights, mask)
    # Real queries never look at a padded key or a later key.
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    for b in range(3):
        for q in range(6):
            if padding[b, q]:
                expected = causal[q] & padding[b].bool()
                assert torch.equal(weights[b, :, q] > 0, expected.expand(4, 6))
    # Padded keys do not change real outputs: perturb a padded position's input.
    x2 = x.clone()
    x2[1, 0] += 5.0
    x2[2, 5] += 5.0
    out2, _ = attn(x2, attn_mask=mask, is_causal=is_causal)
    real = padding.bool()
    real[2, 5] = False
    torch.testing.assert_close(out2[real], fused[real], atol=ATOL, rtol=0)


def test_causal_attention_with_kv_cache_offset():
    """A chunk of 3 queries after 4 cached tokens: queries at positions 4..6 see keys 0..q."""
    attn = attention()
    x = torch.randn(2, 7, 32)
    padding = torch.tensor([[1] * 7, [0, 1, 1, 1, 1, 1, 1]])
    full_mask, _ = build_attention_mask(7, 7, key_padding=padding, causal=True)
    full, _ = attn(x, attn_mask=full_mask)
    for key_padding in (None, padding):
        results = []
        for need_weights in (False, True):
            cache = KVCache(1, 2, 4, 7, 8, torch.float32, "cpu")
            m, c = build_attention_mask(4, 4, key_padding=key_padding, causal=True)
            attn(x[:, :4], attn_mask=m, is_causal=c, cache=cache)
            cache.advance(4)
            mask, is_causal = build_attention_mask(3, 7, key_padding=key_padding, causal=True, q_offset=4)
            assert mask is not None and mask.shape[-2:] == (3, 7) and not is_causal
            results.append(attn(x[:, 4:], attn_mask=mask, is_causal=is_causal, cache=cache,
                                need_weights=need_weights))
        (fused, _), (explicit, weights) = results
        torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
        check_weights(weights, mask)
        # Query at absolute position 4 sees keys 0..4 only.
        assert bool((weights[:, :, 0, 5:] == 0).all()) and bool((weights[0, :, 0, :5] > 0).all())
        if key_padding is None:
            full_plain, _ = attn(x, is_causal=True)
            torch.testing.assert_close(fused, full_plain[:, 4:], atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(fused, full[:, 4:], atol=ATOL, rtol=0)


def test_single_query_step_with_cache_sees_all_keys():
    attn = attention()
    x = torch.randn(1, 5, 32)
    mask, is_causal = build_attention_mask(1, 5, causal=True, q_offset=4)
    assert mask is None and not is_causal  # one new token may see everything cached
    cache = KVCache(1, 1, 4, 5, 8, torch.float32, "cpu")
    attn(x[:, :4], is_causal=True, cache=cache)
    cache.advance(4)
    step, _ = attn(x[:, 4:], attn_mask=mask, is_causal=is_causal, cache=cache)
    full, _ = attn(x, is_causal=True)
    torch.testing.assert_close(step, full[:, 4:], atol=ATOL, rtol=0)


def test_cross_attention_fused_equals_explicit():
    attn = attention(cross=True)
    x, memory = torch.randn(2, 4, 32), torch.randn(2, 6, 32)
    memory_padding = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    mask, is_causal = build_attention_mask(4, 6, key_padding=memory_padding)
    assert not is_causal
    fused, explicit, weights = both_paths(attn, x, memory=memory, attn_mask=mask)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    check_weights(weights, mask)
    assert weights.shape == (2, 4, 4, 6)
    # The output depends on the memory, and not on its padded positions.
    memory2 = memory.clone()
    memory2[1, 3:] += 3.0
    out2, _ = attn(x, memory=memory2, attn_mask=mask)
    torch.testing.assert_close(out2, fused, atol=ATOL, rtol=0)
    memory2[1, 0] += 3.0
    out3, _ = attn(x, memory=memory2, attn_mask=mask)
    assert (out3[1] - fused[1]).abs().max() > 1e-3
    # The cache keeps cross keys/values after the first call.
    cache = KVCache(1, 2, 4, 4, 8, torch.float32, "cpu")
    first, _ = attn(x, memory=memory, attn_mask=mask, cache=cache)
    assert cache.cross[0] is not None
    again, _ = attn(x, memory=None, attn_mask=mask, cache=cache)
    torch.testing.assert_close(again, first, atol=0, rtol=0)


def test_attention_with_additive_bias():
    attn = attention()
    x = torch.randn(2, 5, 32)
    bias = torch.randn(1, 4, 5, 5)
    padding = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    mask, is_causal = build_attention_mask(5, 5, key_padding=padding, causal=True, bias=bias)
    assert mask.dtype == torch.float32 and mask.shape == (2, 4, 5, 5) and not is_causal
    fused, explicit, weights = both_paths(attn, x, attn_mask=mask)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril() & padding.bool()[:, None, None, :]
    allowed = allowed | torch.eye(5, dtype=torch.bool)
    check_weights(weights, allowed)
    # The explicit weights are softmax(QK^T / sqrt(d) + bias) on the allowed keys, written out here.
    q, k, _ = attn.qkv(x).split(32, dim=2)
    q, k = attn._heads(q), attn._heads(k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(8) + bias
    expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=0)
    # Without padding/causality the bias alone is the mask.
    only_bias, c = build_attention_mask(5, 5, bias=bias)
    assert only_bias is bias and not c
    f2, e2, _ = both_paths(attn, x, attn_mask=only_bias)
    torch.testing.assert_close(f2, e2, atol=ATOL, rtol=0)


def test_attention_without_scaling():
    config = tiny_config(scale_attention=False)
    attn = randomize_(MultiHeadAttention(config), std=0.1).eval()
    x = torch.randn(1, 4, 32)
    fused, explicit, weights = both_paths(attn, x)
    torch.testing.assert_close(fused, explicit, atol=ATOL, rtol=0)
    q, k, _ = attn.qkv(x).split(32, dim=2)
    torch.testing.assert_close(weights, (attn._heads(q) @ attn._heads(k).transpose(-2, -1)).softmax(-1),
                               atol=1e-6, rtol=0)


# --- KV cache ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return randomize_(tk.build(tiny_config(norm_position="pre")), std=0.2).eval()


def test_incremental_decoding_matches_full_forward(gpt):
    ids = torch.randint(0, 97, (2, 10))
    full = gpt(ids).logits
    cache = KVCache(2, 2, 4, 10, 8, torch.float32, "cpu")
    steps = [gpt(ids[:, :4], cache=cache).logits]
    for t in range(4, 10):
        steps.append(gpt(ids[:, t:t + 1], cache=cache).logits)
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=0)


def test_chunk_after_prefix_matches_full_forward(gpt):
    ids = torch.randint(0, 97, (2, 10))
    full = gpt(ids).logits
    cache = KVCache(2, 2, 4, 12, 8, torch.float32, "cpu")
    prefix = gpt(ids[:, :3], cache=cache).logits
    chunk = gpt(ids[:, 3:8], cache=cache).logits            # a 5-token chunk after a 3-token prefix
    tail = gpt(ids[:, 8:], cache=cache).logits
    torch.testing.assert_close(torch.cat([prefix, chunk, tail], 1), full, atol=1e-4, rtol=0)


def test_decode_steps_with_left_padding_match_unpadded_rows(gpt):
    """decode_init/decode_step on a left-padded batch give each row the logits it gets alone."""
    a, b = torch.randint(0, 97, (1, 6)), torch.randint(0, 97, (1, 3))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    state, prompt = gpt.decode_init(ids, mask, max_new_tokens=3)
    steps = [gpt.decode_step(state, prompt)]
    nxt = torch.randint(0, 97, (2, 3))
    for t in range(3):
        steps.append(gpt.decode_step(state, nxt[:, t:t + 1]))
    for row, alone in ((0, a), (1, b)):
        seq = torch.cat([alone, nxt[row:row + 1]], 1)
        ref = gpt(seq).logits[0, alone.shape[1] - 1:]
        got = torch.stack([s[row] for s in steps])
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_kv_cache_reorder():
    cache = KVCache(2, 3, 2, 6, 4, torch.float32, "cpu")
    for layer in range(2):
        cache.append(layer, torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4))
    cache.advance(4)
    cache.cross[1] = (torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4))
    before_k = [k.clone() for k in cache.k]
    before_v = [v.clone() for v in cache.v]
    before_cross = cache.cross[1]
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    for layer in range(2):
        torch.testing.assert_close(cache.k[layer][:, :, :4], before_k[layer][index, :, :4], atol=0, rtol=0)
        torch.testing.assert_close(cache.v[layer][:, :, :4], before_v[layer][index, :, :4], atol=0, rtol=0)
    # the encoder's K/V stay: beam search reorders only among the beams of one source
    assert cache.cross[0] is None and cache.cross[1] is before_cross
    assert cache.length == 4


def test_reordered_cache_continues_like_the_reordered_sequences(gpt):
    ids = torch.randint(0, 97, (3, 5))
    cache = KVCache(2, 3, 4, 6, 8, torch.float32, "cpu")
    gpt(ids, cache=cache)
    index = torch.tensor([1, 1, 2])
    cache.reorder(index)
    nxt = torch.randint(0, 97, (3, 1))
    step = gpt(nxt, cache=cache).logits[:, -1]
    ref = gpt(torch.cat([ids[index], nxt], 1)).logits[:, -1]
    torch.testing.assert_close(step, ref, atol=1e-4, rtol=0)


def test_kv_cache_overflow_raises():
    cache = KVCache(1, 1, 2, 3, 4, torch.float32, "cpu")
    cache.append(0, torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    cache.advance(3)
    with pytest.raises(GenerationError, match="KV cache"):
        cache.append(0, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))


# --- positions -----------------------------------------------------------------------------------

def test_sinusoidal_table_is_the_papers_formula():
    d = 16
    table = sinusoidal_table(50, d)
    assert table.shape == (50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_dot_products_depend_only_on_offset():
    d = 32
    pe = sinusoidal_table(200, d).double()
    for k in (1, 5, 20):
        dots = torch.stack([pe[p] @ pe[p + k] for p in (0, 3, 17, 60, 150)])
        # sum_i sin(w p) sin(w (p+k)) + cos(w p) cos(w (p+k)) = sum_i cos(w k)
        expected = sum(math.cos(k / 10000 ** (2 * i / d)) for i in range(d // 2))
        torch.testing.assert_close(dots, torch.full_like(dots, expected), atol=1e-5, rtol=0)
    assert abs((pe[0] @ pe[1]) - (pe[0] @ pe[20])) > 0.1  # ...and do depend on it


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20)])
def test_relative_position_bucket_matches_t5(bidirectional, num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 301)
    ours = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                                   max_distance=max_distance)
    assert torch.equal(ours, theirs)
    assert int(ours.max()) == num_buckets - 1 and int(ours.min()) == 0


def test_relative_position_bias_shapes_and_values():
    torch.manual_seed(0)
    rpb = RelativePositionBias(n_head=4, num_buckets=32, max_distance=128, bidirectional=False)
    full = rpb(6, 6)
    assert full.shape == (1, 4, 6, 6)
    assert rpb(3, 9).shape == (1, 4, 3, 9)
    step = rpb(1, 6, q_offset=5)
    assert step.shape == (1, 4, 1, 6)
    torch.testing.assert_close(step, full[:, :, 5:6], atol=0, rtol=0)
    # Entry [h, i, j] is the learned scalar of bucket(j - i) for head h.
    buckets = relative_position_bucket(torch.arange(6)[None, :] - torch.arange(6)[:, None], False, 32, 128)
    torch.testing.assert_close(full[0], rpb.bias.weight[buckets].permute(2, 0, 1), atol=0, rtol=0)
    # Same distance, same bias: constant along diagonals.
    torch.testing.assert_close(full[0, :, 1:, 1:], full[0, :, :-1, :-1], atol=0, rtol=0)


# --- norms ---------------------------------------------------------------------------------------

def test_rmsnorm_matches_t5_layernorm():
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    ours, theirs = RMSNorm(48, eps=1e-6), T5LayerNorm(48, eps=1e-6)
    with torch.no_grad():
        w = torch.randn(48)
        ours.weight.copy_(w)
        theirs.weight.copy_(w)
    x = torch.randn(2, 5, 48) * 3 + 1
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)
    assert make_norm(tiny_config(norm="rmsnorm")).__class__ is RMSNorm
    assert not any("bias" in n for n, _ in RMSNorm(8).named_parameters())


def test_layernorm_without_bias():
    norm = make_norm(tiny_config(bias=False))
    assert isinstance(norm, torch.nn.LayerNorm) and norm.bias is None
    assert [n for n, _ in norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        norm.weight.copy_(torch.randn(32))
    x = torch.randn(3, 32) * 2 + 0.5
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-5) * norm.weight, atol=1e-5, rtol=0)
    with_bias = make_norm(tiny_config())
    assert with_bias.bias is not None


# --- feed-forward --------------------------------------------------------------------------------

def _gelu_erf(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("activation,act,gated", [
    ("relu", torch.relu, False), ("gelu", _gelu_erf, False), ("gelu_tanh", _gelu_tanh, False),
    ("gated-gelu", _gelu_erf, True), ("gated-relu", torch.relu, True)])
def test_feed_forward(activation, act, gated):
    ffn = randomize_(FeedForward(tiny_config(activation=activation)), std=0.5).eval()
    assert (ffn.w_gate is not None) == gated
    x = torch.randn(2, 3, 32)
    h = act(x @ ffn.w_1.weight.T + ffn.w_1.bias)
    if gated:
        h = h * (x @ ffn.w_gate.weight.T + ffn.w_gate.bias)
    expected = h @ ffn.w_2.weight.T + ffn.w_2.bias
    torch.testing.assert_close(ffn(x), expected, atol=1e-5, rtol=1e-5)


def test_gelu_variants_differ():
    """The exact and tanh GELUs must not be confused: they differ by ~1e-3 on moderate inputs."""
    x = torch.linspace(-3, 3, 101)
    assert (_gelu_erf(x) - _gelu_tanh(x)).abs().max() > 1e-4
    exact = FeedForward(tiny_config(activation="gelu")).act
    approx = FeedForward(tiny_config(activation="gelu_tanh")).act
    torch.testing.assert_close(exact(x), _gelu_erf(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(approx(x), _gelu_tanh(x), atol=1e-6, rtol=0)


# --- blocks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("block_cls", [EncoderBlock, DecoderBlock])
def test_pre_and_post_norm_blocks(block_cls):
    kwargs = {} if block_cls is EncoderBlock else {"cross_attention": False}
    blocks = {}
    for position in ("pre", "post"):
        torch.manual_seed(0)
        blocks[position] = randomize_(block_cls(tiny_config(norm_position=position), **kwargs), seed=1).eval()
    x = torch.randn(2, 5, 32)
    out = {p: blk(x, is_causal=True)[0] for p, blk in blocks.items()}
    # Same weights, different wiring: the outputs differ.
    assert (out["pre"] - out["post"]).abs().max() > 1e-2
    # Each is its formula: pre x + F(LN(x)); post LN(x + F(x)).
    pre = blocks["pre"]
    h = x + pre.self_attn(pre.self_attn_norm(x), is_causal=True)[0]
    torch.testing.assert_close(out["pre"], h + pre.ffn(pre.ffn_norm(h)), atol=1e-5, rtol=0)
    post = blocks["post"]
    h = post.self_attn_norm(x + post.self_attn(x, is_causal=True)[0])
    torch.testing.assert_close(out["post"], post.ffn_norm(h + post.ffn(h)), atol=1e-5, rtol=0)


def test_decoder_block_uses_memory():
    torch.manual_seed(0)
    block = randomize_(DecoderBlock(tiny_config(), cross_attention=True), seed=2).eval()
    assert block.cross_attn is not None
    x, memory = torch.randn(2, 4, 32), torch.randn(2, 6, 32)
    memory_padding = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    memory_mask, _ = build_attention_mask(4, 6, key_padding=memory_padding)
    out, weights = block(x, is_causal=True, memory=memory, memory_mask=memory_mask, need_weights=True)
    assert weights["cross"].shape == (2, 4, 4, 6) and weights["self"].shape == (2, 4, 4, 4)
    other, _ = block(x, is_causal=True, memory=torch.randn(2, 6, 32), memory_mask=memory_mask)
    assert (other - out).abs().max() > 1e-2
    # Padded memory positions do not matter.
    memory2 = memory.clone()
    memory2[1, 4:] = 100.0
    same, _ = block(x, is_causal=True, memory=memory2, memory_mask=memory_mask)
    torch.testing.assert_close(same, out, atol=1e-5, rtol=0)
    # Without cross-attention the block has no cross parameters.
    plain = DecoderBlock(tiny_config(), cross_attention=False)
    assert plain.cross_attn is None and not any("cross" in n for n, _ in plain.named_parameters())


# --- config errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("activation", "swish"), ("norm", "batchnorm"),
                                         ("positions", "alibi"), ("norm_position", "middle"),
                                         ("family", "mamba")])
def test_config_rejects_unknown_choices(field, value):
    with pytest.raises(ConfigError, match=value):
        tiny_config(**{field: value})


def test_config_rejects_indivisible_heads():
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(d_model=30, n_head=4)
    assert ModelConfig(d_model=30, n_head=4, d_head=8).d_head == 8  # explicit d_head is allowed


def test_unknown_preset():
    with pytest.raises(ConfigError, match="no-such-model"):
        get_preset("no-such-model")
    with pytest.raises(ConfigError, match="no-such-model"):
        tk.build("no-such-model")
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig.from_dict({"d_model": 32, "n_heads": 4})


def test_replace_rederives_a_derived_head_width():
    base = ModelConfig(d_model=64, n_head=4)
    assert base.replace(d_model=128).d_head == 32
    assert base.replace(n_head=8).d_head == 8
    assert ModelConfig(d_model=64, n_head=4, d_head=8).replace(d_model=128).d_head == 8   # explicit: kept
    assert base.replace(max_position=16).d_head == 16
