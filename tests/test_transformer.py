"""The original Transformer against `transformers`' MarianMTModel on the same random weights, and the
shared encoder-decoder machinery (cache, padding, loss, errors) it shares with T5 and BART."""
import math

import pytest
import torch

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from seq2seq_parity import GENERATION_SETTINGS, generate_both
from transformerkit.errors import ConfigError, GenerationError
from transformerkit.models.transformer import Transformer

transformers = pytest.importorskip("transformers")


def _model(**overrides) -> Transformer:
    """A tiny Transformer whose tokens vary: an untied head and a non-zero output bias. Every bias and
    norm is random too (their init, 0 and the identity, would hide one saved under another name)."""
    torch.manual_seed(0)
    model = tk.build("transformer-tiny", dropout=0.0, tie_embeddings=False, init_std=0.3, **overrides)
    randomize_(model, std=0.1, only_1d=True)
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.3)
        model.final_logits_bias.normal_(std=0.5)
    return model.eval()


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)        # right-padded source, as transformers pads it
    return ids, mask


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("marian")
    model.save_pretrained(path)
    ref = transformers.MarianMTModel.from_pretrained(path).eval()
    return model, ref, path


def test_logits_equal_marian(pair):
    model, ref, _ = pair
    assert constant_tensors(model) == []                      # every saved tensor is random, so each one counts
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (3, 6))
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        theirs = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert ours.shape == (3, 6, 1000)
    assert theirs.std() > 0.5                                  # lively logits: the comparison means something
    assert (ours - theirs).abs().max() < 1e-4


def test_their_random_weights_load_into_ours(tmp_path):
    cfg = transformers.MarianConfig(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=3,
                                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                    decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0,
                                    eos_token_id=2, decoder_start_token_id=0, activation_function="swish",
                                    scale_embedding=True)
    torch.manual_seed(3)
    ref = transformers.MarianMTModel(cfg).eval()
    # Every tensor they save drawn at random (weights, biases, norms, final_logits_bias), but the fixed
    # sinusoidal position tables, which are not learned and which we compute rather than load.
    randomize_(ref, std=0.2, seed=3, skip=r"embed_positions")
    assert constant_tensors(ref, skip=r"embed_positions") == []
    ref.save_pretrained(tmp_path)
    model = tk.load(tmp_path)
    assert isinstance(model, Transformer) and model.config.n_decoder_layer == 3
    assert model.config.activation == "silu"
    ids = torch.randint(3, 300, (2, 7))
    dec = torch.randint(3, 300, (2, 5))
    with torch.no_grad():
        theirs = ref(input_ids=ids, decoder_input_ids=dec).logits
        diff = model(input_ids=ids, decoder_input_ids=dec).logits - theirs
    assert theirs.std() > 0.5
    assert diff.abs().max() < 1e-4


@pytest.mark.parametrize("settings", GENERATION_SETTINGS)
def test_generation_equals_marian(pair, settings):
    model, ref, _ = pair
    ids, mask = _batch()
    ours, theirs = generate_both(model, ref, ids, mask, eos=2, pad=0, start=1, **settings)
    assert len(set(map(tuple, ours.tolist()))) > 1, "rows should differ for the test to mean something"
    assert torch.equal(ours, theirs)


def test_cached_decoding_equals_full_forward():
    model = _model()
    ids, mask = _batch()
    out = tk.generate(model, ids, mask, max_new_tokens=8)                               # greedy, no EOS
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), out[:, 1:])


def test_left_and_right_padding_agree():
    """Positions count from each row's first real token, so the padding side does not matter."""
    model = _model()
    ids, mask = _batch()
    lengths = mask.sum(1)
    left = torch.zeros_like(ids)
    for i, n in enumerate(lengths.tolist()):
        left[i, ids.shape[1] - n:] = ids[i, :n]
    left_mask = (left != 0).long()
    dec = torch.randint(3, 1000, (3, 4))
    with torch.no_grad():
        right = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        lefted = model(input_ids=left, attention_mask=left_mask, decoder_input_ids=dec).logits
    assert (right - lefted).abs().max() < 1e-4


def test_loss_is_label_smoothed_cross_entropy():
    model = tk.build("transformer-tiny", dropout=0.0).eval()
    assert model.config.label_smoothing == 0.1
    ids, mask = _batch()
    labels = torch.randint(3, 1000, (3, 5))
    labels[0, 3:] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    # decoder inputs are the labels shifted right behind the start token, -100 read as padding
    dec = torch.cat([torch.ones(3, 1, dtype=torch.long), labels[:, :-1].clamp(min=0)], 1)
    assert torch.equal(model.shift_right(labels), dec)
    logp = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.log_softmax(-1)
    keep = labels != -100
    nll = -logp[keep].gather(1, labels[keep][:, None]).squeeze(1)
    smooth = -logp[keep].mean(-1)
    expected = (0.9 * nll + 0.1 * smooth).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_presets_have_the_papers_shapes():
    base = tk.build("transformer-base", vocab_size=37000)
    c = base.config
    assert (c.d_model, c.n_layer, c.n_decoder_layer, c.n_head, c.d_ff) == (512, 6, 6, 8, 2048)
    # Table 3 lists 65M parameters for the base model with a 37k shared vocabulary.
    assert 60e6 < base.num_parameters() < 66e6
    big = tk.get_preset("transformer-big")
    assert (big.d_model, big.n_head, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)


def test_scaled_embeddings_and_sinusoidal_positions():
    model = _model()
    ids = torch.tensor([[5, 6, 7]])
    emb = model.encoder.embed
    x = emb(ids, torch.arange(3)[None])
    table = tk.layers.sinusoidal_table(3, 64, interleaved=False)
    expected = model.shared.weight[ids] * math.sqrt(64) + table
    assert torch.allclose(x, expected, atol=1e-6)


def test_interleaved_layout_saves_in_our_own_format(tmp_path):
    model = _model(sinusoidal_layout="interleaved", final_logits_bias=True)
    model.save_pretrained(tmp_path)
    import json
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "transformerkit"
    again = tk.load(tmp_path)
    ids, mask = _batch()
    dec = torch.randint(3, 1000, (3, 4))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                           model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)


def test_bad_input_errors(pair):
    model, _, path = pair
    too_long = torch.randint(3, 1000, (1, model.config.max_position + 1))
    with pytest.raises(GenerationError, match="129 tokens exceed the model's 128 positions"):
        model(input_ids=too_long, decoder_input_ids=torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(GenerationError, match="decoder_input_ids or labels"):
        model(input_ids=too_long[:, :5])
    with pytest.raises(GenerationError, match="max_new_tokens"):
        tk.generate(model, too_long[:, :5], max_new_tokens=500)
    # an encoder-decoder checkpoint is not a decoder-only model, and a GPT is not an encoder-decoder
    with pytest.raises(ConfigError, match="no 'lm' model for family 'transformer'"):
        tk.load(path, task="lm")
    with pytest.raises(ConfigError, match="n_decoder_layer"):
        tk.build("transformer-tiny", n_decoder_layer=0)
