"""BART against `transformers`' BartForConditionalGeneration on the same random weights: logits, loss,
checkpoints both ways, greedy and beam search token for token, the cache, the attention paths, and the
errors a user can cause."""
import json

import pytest
import torch

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from seq2seq_parity import GENERATION_SETTINGS, generate_both
from transformerkit.errors import CheckpointError, ConfigError, GenerationError
from transformerkit.interop.bart import bart_config_from_hf, bart_config_to_hf
from transformerkit.models.bart import BART

transformers = pytest.importorskip("transformers")

NO_DROPOUT = dict(dropout=0.0, attn_dropout=0.0, activation_dropout=0.0)


def _model(**overrides) -> BART:
    """A tiny BART whose outputs are lively: an untied head with std 0.5 on a 64-wide stream, a random
    output bias, and </s> (2) favoured enough that some rows stop early and others run on. Every bias
    and norm is random too (their init, 0 and the identity, would hide one saved under another name)."""
    torch.manual_seed(0)
    model = tk.build("bart-tiny", tie_embeddings=False, init_std=0.1, **{**NO_DROPOUT, **overrides})
    randomize_(model, std=0.02, only_1d=True)
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
        model.final_logits_bias.normal_(std=0.5)
        model.final_logits_bias[0, 2] += 5.0
    return model.eval()


def _batch():
    """Four sources, two of them right-padded with <pad> (1), as transformers pads BART's inputs."""
    torch.manual_seed(1)
    ids = torch.randint(4, 1000, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 1), mask


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("bart")
    model.save_pretrained(path)
    ref = transformers.BartForConditionalGeneration.from_pretrained(path).eval()
    return model, ref, path


def test_presets_and_parameter_counts_equal_transformers():
    for name, expected in (("bart-base", 139_420_416), ("bart-large", 406_291_456)):
        with torch.device("meta"):
            ours = tk.build(name)
            hf = {k: v for k, v in bart_config_to_hf(ours.config, "seq2seq").items()
                  if k not in ("model_type", "architectures")}
            theirs = transformers.BartForConditionalGeneration(transformers.BartConfig(**hf))
        assert ours.num_parameters() == theirs.num_parameters() == expected, name
    c = tk.get_preset("bart-base")
    assert (c.d_model, c.n_layer, c.n_decoder_layer, c.n_head, c.d_ff, c.vocab_size, c.max_position) == \
        (768, 6, 6, 12, 3072, 50265, 1024)
    c = tk.get_preset("bart-large")
    assert (c.d_model, c.n_layer, c.n_decoder_layer, c.n_head, c.d_ff) == (1024, 12, 12, 16, 4096)
    assert (c.activation, c.norm_position, c.final_norm, c.embedding_norm, c.scale_embeddings, c.position_offset,
            c.tie_embeddings) == ("gelu", "post", False, True, False, 2, True)
    assert (c.bos_token_id, c.pad_token_id, c.eos_token_id, c.decoder_start_token_id) == (0, 1, 2, 2)


def test_embeddings_are_layernormed_tokens_plus_offset_positions():
    model = _model()
    emb = model.encoder.embed
    assert emb.positions.weight.shape == (128 + 2, 64)          # two unused leading rows, as the checkpoints
    ids = torch.tensor([[5, 6, 7]])
    x = emb(ids, torch.arange(3)[None])
    expected = emb.norm(model.shared.weight[ids] + emb.positions.weight[2:5])   # not scaled by sqrt(d_model)
    assert torch.allclose(x, expected, atol=1e-6)
    assert torch.all(tk.build("bart-tiny").shared.weight[1] == 0)              # the <pad> row starts at zero


def test_logits_equal_bart_with_source_padding(pair):
    model, ref, _ = pair
    assert constant_tensors(model) == []                      # every saved tensor is random, so each one counts
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (4, 6))
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        theirs = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert ours.shape == (4, 6, 1000)
    assert ours.std() > 1.0                                    # not a degenerate near-constant output
    assert (ours - theirs).abs().max() < 1e-4


def test_tied_head_saves_as_tied_bart(tmp_path):
    torch.manual_seed(0)
    model = randomize_(tk.build("bart-tiny", init_std=0.1, **NO_DROPOUT), std=0.3, only_1d=True).eval()
    assert model.lm_head.weight is model.shared.weight
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    ref = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert ref.lm_head.weight.data_ptr() == ref.model.shared.weight.data_ptr()
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (4, 5))
    with torch.no_grad():
        diff = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits - \
            ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert diff.abs().max() < 1e-4


def test_loss_equals_bart_with_ignored_labels(pair):
    model, ref, _ = pair
    ids, mask = _batch()
    labels = torch.randint(3, 1000, (4, 7))
    labels[0, 4:] = -100
    labels[3, 2:] = -100
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, labels=labels)
        theirs = ref(input_ids=ids, attention_mask=mask, labels=labels)
    # decoder inputs: </s> then the labels shifted right, -100 read as <pad>
    assert torch.equal(model.shift_right(labels)[:, 0], torch.full((4,), 2))
    assert torch.equal(model.shift_right(labels)[0, 5:], torch.tensor([1, 1]))
    assert (ours.logits - theirs.logits).abs().max() < 1e-4
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5
    assert ours.loss.item() > 1.0


def _their_config(**kw):
    base = dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=48 + 16, max_position_embeddings=64,
                init_std=0.1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    return transformers.BartConfig(**{**base, **kw})


@pytest.mark.parametrize("settings", [dict(), dict(tie_word_embeddings=False, scale_embedding=True,
                                                   activation_function="relu")])
def test_their_random_weights_load_into_ours(tmp_path, settings):
    torch.manual_seed(3)
    ref = transformers.BartForConditionalGeneration(_their_config(**settings)).eval()
    # Every tensor they save drawn at random (weights, biases, norms, final_logits_bias): their init
    # (zero biases, identity norms) would hide a bias or norm that the converter maps to the wrong place.
    randomize_(ref, std=0.2, seed=3)
    assert constant_tensors(ref) == []
    with torch.no_grad():
        if not ref.config.tie_word_embeddings:
            # One input table, as in every BART checkpoint (transformers 5 leaves these copies untied
            # and random when the head is untied; transformers 4 always ties them to `shared`).
            ref.model.encoder.embed_tokens.weight.copy_(ref.model.shared.weight)
            ref.model.decoder.embed_tokens.weight.copy_(ref.model.shared.weight)
    ref.save_pretrained(tmp_path)
    model = tk.load(tmp_path)
    assert isinstance(model, BART) and not model.training
    c = model.config
    assert (c.n_layer, c.n_decoder_layer, c.d_ff, c.max_position) == (2, 3, 64, 64)
    assert c.tie_embeddings == settings.get("tie_word_embeddings", True)
    assert c.scale_embeddings == settings.get("scale_embedding", False)
    assert c.activation == {"relu": "relu"}.get(settings.get("activation_function"), "gelu")
    ids = torch.randint(4, 300, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dec = torch.randint(3, 300, (2, 5))
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        theirs = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert theirs.std() > 0.5                                  # lively logits: the comparison means something
    assert (ours - theirs).abs().max() < 1e-4


def test_bare_bart_model_checkpoint_needs_fresh_head(tmp_path):
    """BartModel (no LM head, no output bias) loads with fresh_head=True: the tied head, a zero bias."""
    torch.manual_seed(4)
    randomize_(transformers.BartModel(_their_config()), std=0.2, seed=4).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="fresh_head=True"):
        tk.load(tmp_path)
    model = tk.load(tmp_path, fresh_head=True)
    assert torch.all(model.final_logits_bias == 0)
    ref = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, dec = torch.randint(4, 300, (2, 6)), torch.randint(3, 300, (2, 4))
    with torch.no_grad():
        diff = model(input_ids=ids, decoder_input_ids=dec).logits - ref(input_ids=ids, decoder_input_ids=dec).logits
    assert diff.abs().max() < 1e-4


@pytest.mark.parametrize("settings", GENERATION_SETTINGS)
def test_generation_equals_bart(pair, settings):
    model, ref, _ = pair
    ids, mask = _batch()
    ours, theirs = generate_both(model, ref, ids, mask, eos=2, pad=1, start=2, **settings)
    rows = ours.tolist()
    assert len(set(map(tuple, rows))) == len(rows), "rows should differ for the test to mean something"
    assert all(r[0] == 2 for r in rows)                                 # the decoder starts from </s>
    assert any(2 in r[1:] for r in rows) and any(2 not in r[1:] for r in rows)   # some stop, some run on
    assert max(len(set(r)) for r in rows) > 6                           # not one token repeated
    assert torch.equal(ours, theirs)


def test_generation_depends_on_the_source(pair):
    model, _, _ = pair
    ids, mask = _batch()
    out = tk.generate(model, ids, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=1)
    other = ids.clone()
    other[2, :4] = torch.tensor([11, 12, 13, 14])                       # change one row's source only
    again = tk.generate(model, other, mask, max_new_tokens=8, eos_token_id=2, pad_token_id=1)
    assert torch.equal(out[[0, 1, 3]], again[[0, 1, 3]]) and not torch.equal(out[2], again[2])


def test_cached_decoding_equals_full_forward():
    model = _model()
    ids, mask = _batch()
    out = tk.generate(model, ids, mask, max_new_tokens=10)                              # greedy, no EOS
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), out[:, 1:])
    assert len(set(out[0].tolist())) > 5


def test_explicit_attention_equals_fused_and_returns_cross_weights(pair, tmp_path):
    model, _, path = pair
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (4, 5))
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        explicit = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, need_weights=True)
    assert fused.attentions is None
    assert (fused.logits - explicit.logits).abs().max() < 1e-5
    assert len(explicit.attentions) == 2 and len(explicit.encoder_attentions) == 2
    for layer in explicit.attentions:
        cross = layer["cross"]
        assert cross.shape == (4, 4, 5, 9)                                 # (B, H, T, S)
        assert torch.allclose(cross.sum(-1), torch.ones(4, 4, 5), atol=1e-5)
        assert torch.all(cross.masked_select(mask[:, None, None, :] == 0) == 0)   # no weight on padding
        assert torch.all(layer["self"].triu(1) == 0)                       # causal decoder self-attention
    # the same weights as transformers' eager attention
    ref = transformers.BartForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_attentions=True)
    for ours_layer, their_cross in zip(explicit.attentions, theirs.cross_attentions):
        assert (ours_layer["cross"] - their_cross).abs().max() < 1e-5


def test_config_round_trip_and_native_fallback(tmp_path):
    c = tk.get_preset("bart-base").replace(activation_dropout=0.05, attn_dropout=0.2, init_std=0.03)
    hf = bart_config_to_hf(c, "seq2seq")
    assert transformers.BartConfig(**{k: v for k, v in hf.items() if k != "model_type"}).activation_dropout == 0.05
    again, task = bart_config_from_hf(hf)
    assert task == "seq2seq" and again == c
    # a BART that transformers cannot compute (a gated feed-forward) is saved in our own format
    model = tk.build("bart-tiny", activation="gated-gelu", **NO_DROPOUT).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "transformerkit"
    loaded = tk.load(tmp_path)
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (4, 3))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                           model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)


@pytest.mark.parametrize("change, match", [
    (dict(decoder_attention_heads=8), "decoder_attention_heads=8"),
    (dict(decoder_ffn_dim=256), "encoder_ffn_dim=128 but decoder_ffn_dim=256"),
    (dict(normalize_before=True), "normalize_before=True"),
    (dict(add_final_layer_norm=True), "add_final_layer_norm=True"),
    (dict(activation_function="tanh"), "activation_function 'tanh'"),
    (dict(is_encoder_decoder=False, is_decoder=True), "BartForCausalLM"),
])
def test_unrepresentable_checkpoints_are_refused(tmp_path, change, match):
    hf = {**bart_config_to_hf(tk.get_preset("bart-tiny"), "seq2seq"), **change}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match=match):
        tk.load(tmp_path)


def test_bad_input_errors(pair):
    model, _, path = pair
    too_long = torch.randint(4, 1000, (1, model.config.max_position + 1))
    with pytest.raises(GenerationError, match="129 tokens exceed the model's 128 positions"):
        model(input_ids=too_long, decoder_input_ids=torch.full((1, 1), 2))
    with pytest.raises(GenerationError, match="129 tokens exceed the model's 128 positions"):
        tk.generate(model, too_long, max_new_tokens=3)
    with pytest.raises(GenerationError, match="129 tokens exceed the model's 128 positions"):
        model(input_ids=too_long[:, :5], decoder_input_ids=too_long)
    with pytest.raises(ConfigError, match="no 'lm' model for family 'bart'; available tasks: seq2seq"):
        tk.load(path, task="lm")
