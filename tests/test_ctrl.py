"""CTRL (models/ctrl.py: a GPT config) against Hugging Face `transformers`' CTRLLMHeadModel on the same random
weights: logits, loss, greedy and beam-search tokens, checkpoints both ways, and the preset's parameter count."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    CTRLConfig,
    CTRLForSequenceClassification,
    CTRLLMHeadModel,
    CTRLModel,
    GenerationConfig,
)

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from transformerkit.analysis import parameter_breakdown
from transformerkit.errors import CheckpointError
from transformerkit.models import GPT, GPTForSequenceClassification

V = 97           # odd shapes: vocabulary, width 45 (3 heads of 15: an odd sine/cosine split), d_ff 52, 3 layers
CONTEXT = 40
ATOL = 1e-4      # fp32 logits parity
PAD = 1


def hf_config(**kw) -> CTRLConfig:
    base = dict(vocab_size=V, n_positions=CONTEXT, n_embd=45, dff=52, n_layer=3, n_head=3)
    base.update(kw)
    return CTRLConfig(**base)


def ids_batch(B=2, T=17, low=0, seed=0):
    return torch.randint(low, V, (B, T), generator=torch.Generator().manual_seed(seed))


def draw_(model, seed=0):
    """Every tensor random, biases and norms included: matrices N(0, 0.5^2) so the blocks, not the scaled
    token embedding, decide the next token (generation varies); biases N(0, 0.1^2), norm gains around 1."""
    randomize_(model, std=0.5, seed=seed)
    randomize_(model, std=0.1, seed=seed + 100, only_1d=True)
    assert not constant_tensors(model)
    return model.eval()


def random_hf(cls, seed=0, **config):
    torch.manual_seed(seed)
    return draw_(cls(hf_config(**config)), seed=seed)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_ctrl(request, tmp_path_factory):
    hf = random_hf(CTRLLMHeadModel, tie_word_embeddings=request.param)
    assert (hf.lm_head.weight is hf.transformer.w.weight) == request.param
    path = tmp_path_factory.mktemp("ctrl")
    hf.save_pretrained(path)
    # Only what each generate call passes (no defaults from the saved generation config).
    hf.generation_config = GenerationConfig(do_sample=False, num_beams=1)
    ours = tk.load(path).eval()
    ours.generation_config = tk.GenerationConfig()
    return hf, ours


# --- parameter count -----------------------------------------------------------------------------

def test_ctrl_preset_parameter_count_matches_transformers():
    with torch.device("meta"):
        ours = tk.build("ctrl")
        theirs = CTRLLMHeadModel(CTRLConfig())     # the defaults are the released model's shape
    # Both tie the LM head to the token table and count it once; the head's bias is counted.
    assert theirs.lm_head.weight is theirs.transformer.w.weight
    assert ours.lm_head.weight is ours.transformer.embed.tokens.weight
    unique = sum(p.numel() for p in theirs.parameters())
    assert ours.num_parameters() == unique == theirs.num_parameters() == 1_637_964_550
    breakdown = parameter_breakdown("ctrl")
    assert breakdown["total"] == ours.num_parameters()
    assert breakdown["heads"] == 246534 and breakdown["position_embeddings"] == 0


# --- random-weight parity ------------------------------------------------------------------------

def test_loaded_config_is_ctrl(hf_ctrl):
    hf, ours = hf_ctrl
    assert isinstance(ours, GPT)
    c = ours.config
    assert (c.positions, c.sinusoidal_layout, c.scale_embeddings, c.activation, c.norm_eps, c.lm_head_bias) == \
        ("sinusoidal", "halves", True, "relu", 1e-6, True)
    assert c.tie_embeddings == hf.config.tie_word_embeddings
    assert (ours.lm_head.weight is ours.transformer.embed.tokens.weight) == c.tie_embeddings


def test_logits_and_loss_match_transformers(hf_ctrl):
    hf, ours = hf_ctrl
    ids = ids_batch()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(input_ids=ids).logits
    assert expected.abs().max() > 1.0      # the random weights give logits far from zero
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)

    # Right padding: the real positions agree.
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=ATOL, rtol=0)

    labels = ids.clone()
    labels[1, 9:] = -100
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=labels).loss
        got = ours(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_full_context_matches_transformers(hf_ctrl):
    """Every row of the sinusoidal table, up to the last position."""
    hf, ours = hf_ctrl
    ids = ids_batch(B=1, T=CONTEXT, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_the_position_table_is_the_only_difference(hf_ctrl):
    """transformers computes CTRL's sinusoidal table in float32; ours is the same formula in float64, rounded
    once (as CTRL's own numpy code). With their table in our model, the logits agree to float rounding."""
    from transformers.models.ctrl.modeling_ctrl import positional_encoding

    hf, ours = hf_ctrl
    table = ours.transformer.embed.positions.table
    assert torch.equal(table, positional_encoding(CONTEXT, 45, torch.float64).float())
    theirs = positional_encoding(CONTEXT, 45, torch.float)
    assert 0 < (table - theirs).abs().max() < 1e-5
    ids = ids_batch()
    with torch.no_grad():
        expected = hf(ids).logits
        swapped = ours.transformer.embed.positions.table.clone()
        ours.transformer.embed.positions.table.copy_(theirs)
        try:
            got = ours(input_ids=ids).logits
        finally:
            ours.transformer.embed.positions.table.copy_(swapped)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def _hf_generate(hf, ids, mask=None, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask,
                           do_sample=False, pad_token_id=PAD, eos_token_id=None, **kw)


def search_case(model):
    """A prompt whose greedy continuation is varied (a tied head with scaled embeddings likes to repeat the
    last token on random weights) and on which 4 beams find another continuation than greedy, so that
    matching tokens say something about both searches. Returns (prompt, greedy, beams), ours."""
    for seed in range(32):
        ids = ids_batch(B=1, T=6, low=2, seed=seed)
        greedy = tk.generate(model, ids, max_new_tokens=16, pad_token_id=PAD)
        beams = tk.generate(model, ids, max_new_tokens=16, num_beams=4, pad_token_id=PAD)
        if len(set(greedy[0, 6:].tolist())) > 2 and not torch.equal(greedy, beams):
            return ids, greedy, beams
    raise AssertionError("no prompt gives a varied greedy continuation that beam search improves on")


def test_greedy_and_beam_search_match_transformers(hf_ctrl):
    hf, ours = hf_ctrl
    ids, greedy, beams = search_case(ours)
    for num_beams, out in ((1, greedy), (4, beams)):
        theirs = _hf_generate(hf, ids, max_new_tokens=16, num_beams=num_beams)
        assert out.shape == theirs.shape == (1, 22)
        assert torch.equal(out, theirs), (num_beams, out.tolist(), theirs.tolist())


def test_left_padded_greedy_matches_transformers(hf_ctrl):
    """Each row's first real token is position 0 (the control code's place), on both sides."""
    hf, ours = hf_ctrl
    ids = ids_batch(B=3, T=7, low=2, seed=3)
    mask = torch.ones_like(ids)
    for row, n_pad in ((0, 3), (2, 1)):
        ids[row, :n_pad] = PAD
        mask[row, :n_pad] = 0
    out = tk.generate(ours, ids, mask, max_new_tokens=10, pad_token_id=PAD)
    theirs = _hf_generate(hf, ids, mask, max_new_tokens=10)
    assert torch.equal(out, theirs), (out.tolist(), theirs.tolist())


def test_sequence_classification_matches_transformers(tmp_path):
    hf = random_hf(CTRLForSequenceClassification, seed=1, pad_token_id=0, num_labels=3)
    hf.save_pretrained(tmp_path)
    ours = tk.load(tmp_path).eval()
    assert isinstance(ours, GPTForSequenceClassification) and ours.config.num_labels == 3
    ids = ids_batch(B=3, T=9, low=1, seed=4)       # no real token is the pad id 0
    ids[1, 5:] = 0
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(input_ids=ids, attention_mask=(ids != 0).long()).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_bare_ctrl_model_loads(tmp_path):
    hf = random_hf(CTRLModel, seed=2)
    hf.save_pretrained(tmp_path)
    ours = tk.load(tmp_path).eval()
    assert not ours.config.lm_head_bias        # no head in the checkpoint: logits are the tied table's
    ids = ids_batch(seed=5)
    with torch.no_grad():
        expected = hf(ids).last_hidden_state
        out = ours(input_ids=ids)
    torch.testing.assert_close(out.hidden_states, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits, expected @ hf.w.weight.T, atol=ATOL, rtol=0)


# --- saving: ours -> transformers ----------------------------------------------------------------

@pytest.mark.parametrize("tie", [True, False])
def test_saved_model_loads_in_transformers(tie, tmp_path):
    torch.manual_seed(6)
    ours = tk.build("ctrl-tiny", vocab_size=V, d_model=45, n_head=3, d_ff=52, n_layer=3, max_position=CONTEXT,
                    tie_embeddings=tie)
    ours = draw_(ours, seed=6)
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "ctrl"
    hf, info = CTRLLMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert (hf.lm_head.weight is hf.transformer.w.weight) == tie
    ids = ids_batch(seed=6)
    with torch.no_grad():
        expected = ours(input_ids=ids).logits
        torch.testing.assert_close(hf(ids).logits, expected, atol=ATOL, rtol=0)
    again = tk.load(tmp_path)
    assert again.config == ours.config.replace(init_std=again.config.init_std)
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("change", [{"norm_eps": 1e-5}, {"activation": "gelu"}, {"sinusoidal_layout": "interleaved"},
                                    {"lm_head_bias": False}, {"n_kv_head": 2}])
def test_gpt_that_ctrl_cannot_express_saves_in_our_own_format(change, tmp_path):
    """CTRLLMHeadModel fixes these (block norms' eps 1e-6 in its code, ReLU, sines then cosines, a head bias,
    multi-head attention): such a model is not written as a ctrl, and loads back unchanged."""
    model = tk.build("ctrl-tiny", **change).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "transformerkit"
    ids = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        assert torch.equal(tk.load(tmp_path)(input_ids=ids).logits, model(input_ids=ids).logits)


def test_other_layer_norm_epsilon_is_refused(tmp_path):
    """transformers' CTRL reads layer_norm_epsilon for the final norm only (1e-6 in every block)."""
    hf = random_hf(CTRLLMHeadModel, seed=3, layer_norm_epsilon=1e-5)
    hf.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="layer_norm_epsilon"):
        tk.load(tmp_path)
