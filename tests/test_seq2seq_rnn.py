"""The seq2seq RNN with attention (models/seq2seq_rnn.py): shapes of every cell x attention x direction,
padding invariance, attention weights, the loss, teacher forcing, generation through the one decoding loop
(consistent with forward, beam search), a real learning check (reversing a sequence), config errors and
a weights round trip."""
from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file, save_file

import transformerkit as tk
from transformerkit.errors import ConfigError, DataError
from transformerkit.models import Seq2SeqRNN

V = 23
PAD, BOS, EOS = 0, 1, 2
CELLS = ("gru", "lstm")
ATTENTIONS = ("bahdanau", "luong-dot", "luong-general")


def tiny(cell="gru", attention="bahdanau", bidirectional=True, seed=0, **overrides) -> Seq2SeqRNN:
    """A 2-layer tiny model in eval mode, dropout off, with weights large enough to give varied outputs."""
    config = tk.get_preset("rnn-tiny").replace(
        vocab_size=V, n_layer=2, n_decoder_layer=2, dropout=0.0, init_std=0.3,
        extra={"cell": cell, "attention": attention, "bidirectional": bidirectional, "embedding_dim": 12})
    if overrides:
        config = config.replace(**overrides)
    torch.manual_seed(seed)
    return tk.build(config).eval()


def padded_batch(lengths, seed=0, left=False):
    """Random source rows of these lengths, padded to the longest with random (non-pad) tokens, which only
    the attention mask marks as padding."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids = torch.randint(3, V, (len(lengths), S), generator=g)
    mask = torch.zeros(len(lengths), S, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, S - n:] = 1
        else:
            mask[i, :n] = 1
    return ids, mask


def real(ids, mask, i):
    return ids[i][mask[i].bool()][None]


ALL = list(itertools.product(CELLS, ATTENTIONS, (True, False)))


@pytest.mark.parametrize("cell,attention,bidirectional", ALL)
def test_shapes_and_every_parameter_learns(cell, attention, bidirectional):
    model = tiny(cell, attention, bidirectional).train()
    ids, mask = padded_batch([5, 3, 4])
    labels = torch.randint(3, V, (3, 6))
    out = model(ids, mask, labels=labels, need_weights=True)
    assert out.logits.shape == (3, 6, V)
    assert out.attentions[0]["cross"].shape == (3, 1, 6, 5)
    assert out.hidden_states.shape[:2] == (3, 6)
    assert out.encoder_hidden_states.shape[:2] == (3, 5)
    # the loss is the (label-smoothed) cross-entropy of these logits over all target positions
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(),
                                                 label_smoothing=model.config.label_smoothing)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


@pytest.mark.parametrize("cell,attention", list(itertools.product(CELLS, ATTENTIONS)))
@pytest.mark.parametrize("left", [False, True])
def test_padding_changes_nothing(cell, attention, left):
    model = tiny(cell, attention)
    ids, mask = padded_batch([6, 2, 4], left=left)
    dec = torch.randint(3, V, (3, 5))
    with torch.no_grad():
        batched = model(ids, mask, decoder_input_ids=dec, need_weights=True)
        for i in range(3):
            alone = model(real(ids, mask, i), decoder_input_ids=dec[i:i + 1], need_weights=True)
            torch.testing.assert_close(batched.logits[i], alone.logits[0], atol=1e-5, rtol=1e-5)
            weights = batched.attentions[0]["cross"][i, 0][:, mask[i].bool()]
            torch.testing.assert_close(weights, alone.attentions[0]["cross"][0, 0], atol=1e-6, rtol=1e-5)
    # The mask, not the pad id, decides: the same rows with other tokens under the padding agree.
    other = ids.masked_fill(~mask.bool(), PAD)
    with torch.no_grad():
        torch.testing.assert_close(model(other, mask, decoder_input_ids=dec).logits, batched.logits)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_weights_are_a_distribution_over_real_tokens(attention):
    model = tiny("lstm", attention)
    ids, mask = padded_batch([7, 3, 5, 1])
    with torch.no_grad():
        weights = model(ids, mask, decoder_input_ids=torch.randint(3, V, (4, 4)),
                        need_weights=True).attentions[0]["cross"]                  # (B, 1, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 1, 4))
    assert (weights[~mask.bool()[:, None, None, :].expand_as(weights)] == 0).all()
    assert (weights[:, :, :, 0] > 0).all()
    assert (weights[3, 0, :, 0] == 1).all()            # a single real token takes all the attention
    assert weights[0].std() > 1e-3                     # not uniform: the scores depend on the tokens


def test_loss_is_cross_entropy_of_labels_aligned_with_decoder_inputs():
    model = tiny()
    ids, mask = padded_batch([4, 6])
    labels = torch.randint(3, V, (2, 5))
    labels[1, 3:] = -100
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
        dec = model.shift_right(labels)
        assert dec.tolist()[1] == [BOS] + labels[1, :3].tolist() + [PAD]
        assert dec[0].tolist() == [BOS] + labels[0, :4].tolist()
        logits = model(ids, mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(out.logits, logits)
    log_probs = logits.log_softmax(-1)
    picked = [-log_probs[b, t, labels[b, t]] for b in range(2) for t in range(5) if labels[b, t] != -100]
    torch.testing.assert_close(out.loss, torch.stack(picked).mean())


@pytest.mark.parametrize("attention", ["bahdanau", "luong-general"])
def test_teacher_forcing_ratio(attention):
    ids, mask = padded_batch([5, 4, 6])
    labels = torch.randint(3, V, (3, 7))
    forced, free = tiny("gru", attention), tiny("gru", attention)
    free.teacher_forcing = 0.0
    for model in (forced, free):
        model.train()
    out_forced, out_free = forced(ids, mask, labels=labels), free(ids, mask, labels=labels)
    assert not torch.allclose(out_forced.logits, out_free.logits)
    # Ratio 0 feeds the model's own argmax: the same tokens greedy decoding picks.
    greedy = tk.generate(free, ids, mask, max_new_tokens=7)                        # (B, 1 + 7)
    assert torch.equal(out_free.logits.argmax(-1), greedy[:, 1:])
    # Eval mode always feeds the gold tokens, whatever the ratio.
    forced.eval()
    free.eval()
    with torch.no_grad():
        torch.testing.assert_close(forced(ids, mask, labels=labels).logits, free(ids, mask, labels=labels).logits)


def test_teacher_forcing_ratio_mixes_gold_and_own_tokens():
    """With r = 0.5 each row and step is fed the gold token or the model's own: a row fed only gold tokens so
    far has the logits of r = 1, a row fed one of its own differs from then on."""
    ids, mask = padded_batch([5, 5, 5, 5, 5, 5, 5, 5], seed=3)
    labels = torch.randint(3, V, (8, 6))
    model = tiny("gru", "luong-general").train()
    torch.manual_seed(0)
    model.teacher_forcing = 0.5
    half = model(ids, mask, labels=labels).logits
    model.teacher_forcing = 1.0
    full = model(ids, mask, labels=labels).logits
    same = torch.isclose(half, full, atol=1e-6).all(-1)                            # (B, T)
    assert same[:, 0].all()                                                        # the start token: always gold
    assert torch.equal(same.int().cummin(1).values, same.int())                    # once off the gold path, off
    assert 0 < int(same[:, 1:].sum()) < same[:, 1:].numel()


@pytest.mark.parametrize("cell,attention", list(itertools.product(CELLS, ATTENTIONS)))
def test_greedy_generation_agrees_with_forward(cell, attention):
    model = tiny(cell, attention, seed=1)
    ids, mask = padded_batch([5, 2, 7], seed=1)
    out = tk.generate(model, ids, mask, max_new_tokens=9)                          # (B, 10)
    assert out.shape == (3, 10) and (out[:, 0] == BOS).all()
    with torch.no_grad():
        logits = model(ids, mask, decoder_input_ids=out[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), out[:, 1:])
    assert len(set(out[:, 1:].flatten().tolist())) > 3                             # not one token over and over
    # Each row decoded alone gives the same tokens; and beam search with one beam is greedy.
    for i in range(3):
        assert torch.equal(tk.generate(model, real(ids, mask, i), max_new_tokens=9), out[i:i + 1])
    assert torch.equal(tk.generate(model, ids, mask, max_new_tokens=9, num_beams=1), out)


def sequence_log_prob(model, ids, mask, seqs):
    """Sum of log p(token) of each decoder sequence after its start token (B,)."""
    with torch.no_grad():
        logits = model(ids, mask, decoder_input_ids=seqs[:, :-1]).logits
    return logits.log_softmax(-1).gather(-1, seqs[:, 1:, None]).squeeze(-1).sum(-1)


def reference_beam_search(model, src, K, n):
    """Plain beam search without EOS, scoring every prefix afresh with forward(): no decoding state to
    carry or reorder. Returns the best sequence (from the start token) and its log-probability."""
    beams = [([BOS], 0.0)]
    for _ in range(n):
        with torch.no_grad():
            log_probs = model(src.expand(len(beams), -1),
                              decoder_input_ids=torch.tensor([seq for seq, _ in beams])).logits[:, -1].log_softmax(-1)
        candidates = [(seq + [v], score + log_probs[i, v].item())
                      for i, (seq, score) in enumerate(beams) for v in range(log_probs.shape[-1])]
        beams = sorted(candidates, key=lambda c: -c[1])[:K]
    return beams[0]


@pytest.mark.parametrize("cell,attention,seed", [("gru", "bahdanau", 2), ("lstm", "luong-general", 3),
                                                 ("gru", "luong-dot", 4)])
def test_beam_search(cell, attention, seed):
    """The decoding loop's beam search (RNN state in DecodeState.recurrent, reordered with the beams) finds what
    a beam search by rescoring finds. It usually beats greedy, but need not: on seed 4 greedy's row 2 is
    more likely, its prefix having left the beam (beam search is not exact search)."""
    model = tiny(cell, attention, seed=seed, init_std=0.5)
    ids, mask = padded_batch([6, 4, 5], seed=seed)
    greedy = tk.generate(model, ids, mask, max_new_tokens=6)
    beam = tk.generate(model, ids, mask, max_new_tokens=6, num_beams=4)
    assert beam.shape == greedy.shape
    beam_lp = sequence_log_prob(model, ids, mask, beam)
    for i in range(3):
        seq, score = reference_beam_search(model, real(ids, mask, i), K=4, n=6)
        assert beam[i].tolist() == seq
        assert beam_lp[i].item() == pytest.approx(score, abs=1e-4)
        # A row searched alone gives the same sequence.
        assert torch.equal(tk.generate(model, real(ids, mask, i), max_new_tokens=6, num_beams=4), beam[i:i + 1])
    greedy_lp = sequence_log_prob(model, ids, mask, greedy)
    assert (beam_lp > greedy_lp + 1e-3).any()          # the search finds something greedy missed


def reverse_batch(n, g):
    """Source: 3-6 random tokens (right-padded); target: the tokens reversed, then EOS."""
    lengths = torch.randint(3, 7, (n,), generator=g)
    S = int(lengths.max())
    src, mask = torch.full((n, S), PAD), torch.zeros(n, S, dtype=torch.long)
    labels = torch.full((n, S + 1), -100)
    for i, L in enumerate(lengths.tolist()):
        tokens = torch.randint(3, 12, (L,), generator=g)
        src[i, :L], mask[i, :L] = tokens, 1
        labels[i, :L], labels[i, L] = tokens.flip(0), EOS
    return src, mask, labels


def test_learns_to_reverse_a_sequence():
    torch.manual_seed(0)
    model = tk.build("rnn-tiny", vocab_size=12, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        src, mask, labels = reverse_batch(32, g)
        loss = model(src, mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    src, mask, labels = reverse_batch(64, torch.Generator().manual_seed(1))
    out = tk.generate(model, src, mask, max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD)
    correct = sum(out[i, 1:int(mask[i].sum()) + 2].tolist() == labels[i, :int(mask[i].sum()) + 1].tolist()
                  for i in range(64))
    assert correct >= 60, f"{correct}/64 held-out sequences reversed"


@pytest.mark.parametrize("extra,message", [
    ({"cell": "rnn"}, "cell='rnn'"),
    ({"attention": "luong-concat"}, "attention='luong-concat'"),
    ({"teacher_forcing": 1.5}, "teacher_forcing=1.5"),
    ({"teacher_forcing": "half"}, "teacher_forcing='half'"),
    ({"bidirectional": "yes"}, "bidirectional='yes'"),
    ({"embedding_dim": 0}, "embedding_dim=0"),
    ({"hidden": 64}, "unknown keys ['hidden']"),
])
def test_bad_settings_are_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tk.build(tk.get_preset("rnn-tiny").replace(extra=extra))


def test_other_config_errors():
    with pytest.raises(ConfigError, match="n_decoder_layer=3 must equal n_layer=2"):
        tk.build("rnn-tiny", n_layer=2, n_decoder_layer=3)
    with pytest.raises(ConfigError, match="tie_embeddings"):   # Luong's output is d_model (32) wide, E is 16
        tk.build("rnn-tiny", tie_embeddings=True, extra={"attention": "luong-general", "embedding_dim": 16})
    model = tk.build("rnn-tiny", decoder_start_token_id=None, bos_token_id=None)
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        model(torch.tensor([[5, 6]]), labels=torch.tensor([[7, 8]]))


def test_input_errors_are_data_errors():
    model = tiny()
    with pytest.raises(DataError, match="decoder_input_ids or labels"):
        model(torch.tensor([[5, 6]]))
    with pytest.raises(DataError, match=r"rows \[1\] have no real token"):
        model(torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]]), labels=torch.tensor([[7], [8]]))


def test_tied_embeddings():
    model = tk.build("rnn-tiny", extra={"attention": "luong-general", "embedding_dim": 32}, tie_embeddings=True)
    assert model.lm_head.weight is model.target_embed.weight
    untied = tk.build("rnn-tiny", extra={"attention": "luong-general", "embedding_dim": 32})
    assert model.num_parameters() == untied.num_parameters() - 128 * 32


def test_preset_parameter_count():
    """rnn-attention with 8,000 tokens, counted by hand: GRU layers have 3 gates of (in + H + 2) x H."""
    V_, E, H = 8000, 256, 256
    gru = lambda inp: 3 * (inp * H + H * H + 2 * H)                                # noqa: E731
    expected = (V_ * E + 2 * gru(E)                  # source embedding, bidirectional encoder
                + 2 * H * H + H                      # bridge: tanh(W_init [->h; <-h] + b)
                + H * H + 2 * H * H + H + H          # attention: W_a, U_a (+ bias), v_a
                + gru(E + 2 * H)                     # decoder GRU on [E y; c]
                + (H + E + 2 * H) * E + E            # output t_i from [s_i; E y; c_i]
                + V_ * E + V_ * E + V_)              # target embedding, softmax layer W_o (+ bias)
    model = tk.build("rnn-attention")
    assert model.config.vocab_size == V_
    assert model.num_parameters() == expected == 8_320_320


def test_weights_round_trip_through_safetensors(tmp_path):
    model = tiny("lstm", "luong-general", seed=5)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    model.config.save(tmp_path / "config.json")
    other = tiny("lstm", "luong-general", seed=6)
    ids, mask = padded_batch([4, 3])
    dec = torch.randint(3, V, (2, 5))
    with torch.no_grad():
        assert not torch.allclose(model(ids, mask, decoder_input_ids=dec).logits,
                                  other(ids, mask, decoder_input_ids=dec).logits)
        other.load_state_dict(load_file(tmp_path / "model.safetensors"))
        torch.testing.assert_close(model(ids, mask, decoder_input_ids=dec).logits,
                                   other(ids, mask, decoder_input_ids=dec).logits, atol=0, rtol=0)


def test_save_pretrained_and_load_round_trip(tmp_path):
    """transformers has no RNN seq2seq class: the checkpoint is the Hugging Face layout with our own names
    and config (model_type "transformerkit"), and tk.load rebuilds the same model."""
    model = tiny("lstm", "bahdanau", bidirectional=False, seed=7)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = tk.load(tmp_path)
    assert type(loaded) is Seq2SeqRNN and loaded.config == model.config and not loaded.training
    ids, mask = padded_batch([5, 2])
    assert torch.equal(tk.generate(loaded, ids, mask, max_new_tokens=5),
                       tk.generate(model, ids, mask, max_new_tokens=5))
