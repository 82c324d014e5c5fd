"""T5 (v1.0 and v1.1) against `transformers`' T5ForConditionalGeneration on the same random weights:
logits, loss, checkpoints both ways, greedy and beam generation, relative-position buckets."""
import json

import pytest
import torch
from torch import nn

import transformerkit as tk
from seq2seq_parity import GENERATION_SETTINGS, generate_both
from transformerkit.errors import CheckpointError, ConfigError
from transformerkit.layers.positions import RelativePositionBias, relative_position_bucket
from transformerkit.models.t5 import T5

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()   # their note on loading an untied v1.1 head is expected here

VERSIONS = {
    "v1.0": dict(),                                                       # ReLU, tied, scaled output
    "v1.1": dict(activation="gated-gelu_tanh", tie_embeddings=False),    # gated GELU, untied, unscaled
}
# Fewer buckets than T5's 32 / 128, so that short test sequences reach the log-spaced buckets of both directions.
SMALL_BUCKETS = dict(relative_buckets=16, relative_max_distance=20)


def _randomise(model: T5) -> T5:
    """Make every tensor matter (norms and position tables away from their init) and the generations
    lively, with EOS (id 1) likely enough that some rows and beams end early.

    A tied head makes each token predict itself (its embedding rides the residual stream into the
    logits: greedy repeats one token). A table 10x smaller, with the scale moved into the decoder's
    final norm, keeps the logits' size but lets the blocks, not the input token, decide."""
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif "relative_bias" in name:
                p.normal_(std=1.0)
        if model.config.tie_embeddings:
            model.shared.weight.mul_(0.1)
            model.decoder.final_norm.weight.mul_(30)
            model.shared.weight[1] *= 7.5
        else:   # an output layer drawn larger than T5's init (std d_model^-0.5 -> 1): confident tokens
            model.lm_head.weight.normal_(std=1.0)
            model.lm_head.weight[1] *= 3.5
    return model


def _model(version: str) -> T5:
    torch.manual_seed(0)
    model = tk.build("t5-tiny", dropout=0.0, attn_dropout=0.0, activation_dropout=0.0, **SMALL_BUCKETS,
                     **VERSIONS[version])
    return _randomise(model).eval()


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(2, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    return ids.masked_fill(mask == 0, 0), mask     # right-padded with <pad> 0, as their tokenizer pads


@pytest.fixture(scope="module", params=list(VERSIONS))
def pair(request, tmp_path_factory):
    model = _model(request.param)
    path = tmp_path_factory.mktemp("t5")
    model.save_pretrained(path)
    ref = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
    return model, ref, path


def test_presets_parameter_counts_equal_transformers():
    for name, theirs, expected in [
        ("t5-small", dict(), 60_506_624),
        ("t5-base", dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12), 222_903_552),
        ("t5-v1_1-small", dict(d_ff=1024, num_layers=8, num_heads=6, feed_forward_proj="gated-gelu",
                               tie_word_embeddings=False), 76_961_152),
    ]:
        with torch.device("meta"):
            ours = tk.build(name)
            ref = transformers.T5ForConditionalGeneration(transformers.T5Config(**theirs))
        n_ref = sum(p.numel() for p in ref.parameters())
        if not ours.config.tie_embeddings and ref.lm_head.weight is ref.shared.weight:
            n_ref += ref.lm_head.weight.numel()   # transformers >= 5 builds every T5 tied; v1.1 checkpoints untie it
        assert ours.num_parameters() == n_ref == expected, name
    c = tk.get_preset("t5-small")
    assert (c.d_model, c.n_layer, c.n_decoder_layer, c.n_head, c.d_head, c.d_ff, c.vocab_size) == \
        (512, 6, 6, 8, 64, 2048, 32128)
    assert (c.norm, c.positions, c.bias, c.scale_attention, c.decoder_start_token_id, c.eos_token_id) == \
        ("rmsnorm", "relative", False, False, 0, 1)


def test_logits_and_loss_equal_transformers(pair):
    model, ref, _ = pair
    ids, mask = _batch()
    labels = torch.randint(2, 1000, (3, 7))
    labels[1, 5:] = -100
    labels[2, 3:] = -100
    dec = model.shift_right(labels)
    assert dec[0, 0] == 0 and (dec[2, 4:] == 0).all()             # starts with <pad>; -100 read as <pad>
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, labels=labels)
        theirs = ref(input_ids=ids, attention_mask=mask, labels=labels)
        ours_dec = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert ours.logits.shape == (3, 7, 1000)
    assert ours.logits.std() > 1.0                                  # lively, not near-uniform
    assert (ours.logits - theirs.logits).abs().max() < 1e-4
    assert torch.equal(ours.logits, ours_dec)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5
    # the padded source positions do not leak into the decoder: other padding values, same logits
    with torch.no_grad():
        other = model(input_ids=ids.masked_fill(mask == 0, 7), attention_mask=mask, labels=labels).logits
    assert (other - ours.logits).abs().max() < 1e-5


def test_tied_head_is_scaled_and_untied_is_not(pair):
    model, _, path = pair
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "t5"
    assert config["tie_word_embeddings"] == model.config.tie_embeddings
    assert config["feed_forward_proj"] == ("relu" if model.config.activation == "relu" else "gated-gelu")
    again = tk.load(path)                                            # our own checkpoint, read back
    assert again.config.tie_embeddings == model.config.tie_embeddings
    ids, mask = _batch()
    dec = torch.randint(2, 1000, (3, 4))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                           model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)
    x = torch.randn(2, 3, 64)
    with torch.no_grad():
        if model.config.tie_embeddings:
            assert model.lm_head.weight is model.shared.weight
            assert torch.allclose(model.head(x), x @ model.shared.weight.T / 8, atol=1e-5)
        else:
            assert not torch.equal(model.lm_head.weight, model.shared.weight)
            assert torch.allclose(model.head(x), x @ model.lm_head.weight.T, atol=1e-5)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_their_random_weights_load_into_ours(tmp_path, version):
    proj = {"v1.0": "relu", "v1.1": "gated-gelu"}[version]
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3,
                                num_heads=3, relative_attention_num_buckets=12, relative_attention_max_distance=24,
                                feed_forward_proj=proj, tie_word_embeddings=version == "v1.0", dropout_rate=0.0,
                                decoder_start_token_id=0)
    torch.manual_seed(3)
    ref = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "layer_norm" in name:
                p.normal_(1.0, 0.3)
        if version == "v1.1":   # transformers >= 5 builds it tied; a v1.1 checkpoint has its own output layer
            ref.lm_head.weight = nn.Parameter(torch.randn(300, 32))
    ref.save_pretrained(tmp_path)
    model = tk.load(tmp_path)
    assert isinstance(model, T5)
    c = model.config
    assert (c.n_layer, c.n_decoder_layer, c.n_head, c.d_head, c.relative_buckets, c.relative_max_distance) == \
        (2, 3, 3, 12, 12, 24)
    assert c.activation == ("relu" if version == "v1.0" else "gated-gelu_tanh")
    assert c.tie_embeddings == (version == "v1.0")
    torch.manual_seed(4)
    ids = torch.randint(2, 300, (2, 30))       # distances beyond max_distance: the last buckets
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    dec = torch.randint(2, 300, (2, 28))
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        theirs = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert (ours - theirs).abs().max() < 1e-4
    # and back: ours saved, read again by both
    model.save_pretrained(tmp_path / "again")
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert (again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits - theirs).abs().max() < 1e-4


def test_a_tied_unscaled_t5_of_transformers_5_loads_as_its_config_says(tmp_path):
    """transformers >= 5 builds a v1.1-shaped T5 (tie_word_embeddings=False) with its output layer tied but
    unscaled, and saves tie_word_embeddings: true, scale_decoder_outputs: false and no lm_head.weight.
    It loads tied, without the scaling, as the config says."""
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_heads=3,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    torch.manual_seed(5)
    ref = transformers.T5ForConditionalGeneration(cfg).eval()
    if ref.lm_head.weight is not ref.shared.weight:
        pytest.skip("transformers < 5 unties a v1.1 T5")
    ref.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tie_word_embeddings"] is True and saved["feed_forward_proj"] == "gated-gelu"
    model = tk.load(tmp_path)
    assert model.lm_head.weight is model.shared.weight and model.config.scale_decoder_outputs is False
    ids, dec = torch.randint(2, 300, (2, 9)), torch.randint(2, 300, (2, 5))
    with torch.no_grad():
        diff = model(input_ids=ids, decoder_input_ids=dec).logits - ref(input_ids=ids, decoder_input_ids=dec).logits
    assert diff.abs().max() < 1e-4
    model.save_pretrained(tmp_path / "again")                       # tied, unscaled: said so for transformers
    assert json.loads((tmp_path / "again" / "config.json").read_text())["scale_decoder_outputs"] is False
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        diff = again(input_ids=ids, decoder_input_ids=dec).logits - ref(input_ids=ids, decoder_input_ids=dec).logits
    assert diff.abs().max() < 1e-4


def test_a_fine_tuned_v1_1_that_transformers_5_says_is_tied_loads_untied(tmp_path):
    """transformers >= 5 writes tie_word_embeddings: true over a v1.1 whose lm_head.weight is its own (a
    fine-tuned v1.1 / Flan-T5) and unties it on load because the two tensors differ; so do we."""
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_heads=3,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    torch.manual_seed(6)
    ref = transformers.T5ForConditionalGeneration(cfg).eval()
    ref.lm_head.weight = torch.nn.Parameter(torch.randn(300, 32) * 0.1)
    ref.save_pretrained(tmp_path)
    if json.loads((tmp_path / "config.json").read_text()).get("tie_word_embeddings") is not True:
        pytest.skip("transformers < 5 writes tie_word_embeddings: false here")
    model = tk.load(tmp_path)
    assert not model.config.tie_embeddings and model.lm_head.weight is not model.shared.weight
    ids, dec = torch.randint(2, 300, (2, 9)), torch.randint(2, 300, (2, 5))
    with torch.no_grad():
        diff = model(input_ids=ids, decoder_input_ids=dec).logits - ref(input_ids=ids, decoder_input_ids=dec).logits
    assert diff.abs().max() < 1e-4


@pytest.mark.parametrize("settings", GENERATION_SETTINGS)
def test_generation_equals_transformers(pair, settings):
    model, ref, _ = pair
    ids, mask = _batch()
    ours, theirs = generate_both(model, ref, ids, mask, eos=1, pad=0, start=0, **settings)
    assert len(set(map(tuple, ours.tolist()))) == 3, "rows should differ for the test to mean something"
    assert (ours[:, 0] == 0).all()
    assert ours.shape == theirs.shape
    assert torch.equal(_after_eos_as_pad(ours), _after_eos_as_pad(theirs))
    assert torch.equal(_after_eos_as_pad(ours), ours)      # we fill finished rows with <pad>


def _after_eos_as_pad(seqs: torch.Tensor) -> torch.Tensor:
    """Every token after a row's first EOS (id 1) set to <pad> (0). Their beam search fills finished rows
    with `pad_token_id or eos_token_id`, which for T5's pad id 0 (falsy) is EOS; the tokens up to EOS are
    what is compared."""
    is_eos = (seqs == 1).long()
    after = (is_eos.cumsum(1) - is_eos) > 0
    return seqs.masked_fill(after, 0)


def test_generation_ends_some_rows_early(pair):
    """Rows reach EOS (id 1) at different steps, or not at all, so the finishing logic is exercised."""
    model, ref, _ = pair
    ids, mask = _batch()
    out = tk.generate(model, ids, mask, max_new_tokens=12, eos_token_id=1, pad_token_id=0)
    ends = [row.index(1) if 1 in row else None for row in out.tolist()]
    assert any(e is not None for e in ends) and len(set(ends)) > 1, out
    theirs = ref.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=1,
                          pad_token_id=0, decoder_start_token_id=0)
    assert torch.equal(out, theirs)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_cached_decoding_equals_full_forward(version):
    model = _model(version)
    ids, mask = _batch()
    out = tk.generate(model, ids, mask, max_new_tokens=14)          # greedy, no EOS: all 14 steps
    assert out.shape == (3, 15)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), out[:, 1:])


def test_relative_buckets_equal_transformers():
    theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    distance = torch.arange(-300, 301)
    for bidirectional in (True, False):
        for num_buckets, max_distance in [(32, 128), (16, 20), (8, 16), (64, 256), (12, 24)]:
            ours = relative_position_bucket(distance, bidirectional, num_buckets, max_distance)
            ref = theirs(distance, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
            assert torch.equal(ours, ref), (bidirectional, num_buckets, max_distance)
            assert ours.min() == 0 and ours.max() == num_buckets - 1
    # causal: every key after the query shares bucket 0 (masked anyway); bidirectional splits the two directions
    causal = relative_position_bucket(distance, False, 32, 128)
    assert (causal[distance >= 0] == 0).all() and torch.equal(causal[300 - 15:301], torch.arange(15, -1, -1))
    both = relative_position_bucket(distance, True, 32, 128)
    assert (both[distance > 0] >= 16).all() and (both[distance <= 0] < 16).all()


def test_relative_bias_of_a_cached_step_is_a_row_of_the_full_table():
    bias = RelativePositionBias(n_head=3, num_buckets=16, max_distance=20, bidirectional=False)
    nn.init.normal_(bias.bias.weight)
    full = bias(10, 10)                                              # (1, H, 10, 10)
    assert full.shape == (1, 3, 10, 10)
    assert torch.equal(bias(1, 10, q_offset=9), full[:, :, 9:])
    assert torch.equal(bias(3, 7, q_offset=4), full[:, :, 4:7, :7])


def test_explicit_attention_equals_fused_and_returns_weights(pair):
    model, _, _ = pair
    ids, mask = _batch()
    dec = torch.randint(2, 1000, (3, 6))
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        explicit = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, need_weights=True)
    assert (fused.encoder_hidden_states - explicit.encoder_hidden_states).abs().max() < 1e-5
    # The two paths sum in different orders in fp32, so they differ by rounding that grows with the logits'
    # size (here up to ~50 for v1.1). Measured over 20 decoder inputs: at most 9e-7 x max|logit| (3.4e-5),
    # and each path is as far from a float64 run of the fused path as from the other. Elementwise
    # rtol/atol of 1e-5 sat at that noise and failed now and then; 1e-5 of the logits' scale leaves 10x
    # room, while a real difference (a missing bias or mask) moves logits by O(1).
    scale = fused.logits.abs().max()
    assert scale > 10                                                 # logits large enough to show the point
    assert (fused.logits - explicit.logits).abs().max() <= 1e-5 * scale
    assert len(explicit.attentions) == model.config.n_decoder_layer
    for layer in explicit.attentions:
        cross, own = layer["cross"], layer["self"]
        assert cross.shape == (3, 4, 6, 12)                           # (B, H, T, S)
        assert torch.allclose(cross.sum(-1), torch.ones(3, 4, 6), atol=1e-5)
        assert (cross[1, :, :, 9:] == 0).all() and (cross[2, :, :, 5:] == 0).all()   # padded source
        assert own.shape == (3, 4, 6, 6)
        assert (own.triu(1) == 0).all()                               # causal
    enc = explicit.encoder_attentions[0]["self"]
    assert enc.shape == (3, 4, 12, 12) and (enc[2, :, :, 5:] == 0).all()


def test_padding_side_does_not_matter():
    """Positions are relative, so a left-padded source gives the same logits as a right-padded one."""
    model = _model("v1.1")
    ids, mask = _batch()
    left = torch.zeros_like(ids)
    for i, n in enumerate(mask.sum(1).tolist()):
        left[i, ids.shape[1] - n:] = ids[i, :n]
    dec = torch.randint(2, 1000, (3, 5))
    with torch.no_grad():
        right_logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        left_logits = model(input_ids=left, attention_mask=(left != 0).long(), decoder_input_ids=dec).logits
    assert (right_logits - left_logits).abs().max() < 1e-4


def test_init_follows_mesh_tensorflow():
    model = tk.build("t5-small", vocab_size=4000)
    layer = model.encoder.layers[0].self_attn
    q, k = layer.qkv.weight[:512], layer.qkv.weight[512:1024]
    assert abs(model.shared.weight.std().item() - 1.0) < 0.02
    assert abs(q.std().item() - (512 * 64) ** -0.5) < 2e-4              # sqrt(d_kv) folded into the query
    assert abs(k.std().item() - 512 ** -0.5) < 1e-3
    assert abs(model.encoder.layers[0].ffn.w_2.weight.std().item() - 2048 ** -0.5) < 1e-3


def test_bad_input_errors(pair, tmp_path):
    _, _, path = pair
    with pytest.raises(ConfigError, match="no 'lm' model for family 't5'; available tasks: seq2seq"):
        tk.load(path, task="lm")
    config = json.loads((path / "config.json").read_text())
    config["feed_forward_proj"] = "gated-tanh"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="feed_forward_proj 'gated-tanh' is not supported"):
        tk.load(tmp_path)
