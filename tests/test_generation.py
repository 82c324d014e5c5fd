"""The decoding loop against `transformers`' `generate` on the same random weights (greedy, beam search,
n-gram blocking, repetition penalty), plus sampling, stop strings, streaming and argument errors."""
from __future__ import annotations

import io

import pytest
import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

import transformerkit as tk
from transformerkit.errors import GenerationError
from transformerkit.generation import TextStreamer, apply_repetition_penalty, ban_repeated_ngrams, warp_for_sampling

V = 101
PAD = 1          # not 0: transformers' beam search fills finished rows with EOS when pad_token_id is falsy
CONTEXT = 64


def randomize_(model: torch.nn.Module, std: float = 0.5, norm_bias_std: float = 0.02) -> torch.nn.Module:
    """Random values in every parameter, seeded independently of torch's RNG.

    A large norm bias adds the same vector to every step's logits, so the tiny model keeps choosing a
    few tokens: `norm_bias_std=0.02` gives varied text, 0.2 a peaky model whose beam searches end on
    EOS at many lengths, so that the length penalty and early stopping decide the result.
    """
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and ".ln" in name:
                p.copy_(1 + 0.2 * noise if name.endswith("weight") else norm_bias_std * noise)
            else:
                p.copy_(std * noise)
    return model


def _pair(hf, path, **randomize):
    hf = randomize_(hf, **randomize).eval()
    hf.save_pretrained(path)
    # Only what each call passes: no EOS/BOS/pad or other processors from the model's defaults
    # (tk.load read them from the generation_config.json transformers wrote; they are tested below).
    hf.generation_config = GenerationConfig(do_sample=False, num_beams=1)
    ours = tk.load(path).eval()
    ours.generation_config = tk.GenerationConfig()
    return ours, hf


@pytest.fixture(scope="module", params=["gpt2", "gpt1"])
def models(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    if request.param == "gpt2":
        hf = tiny_gpt2()
    else:
        hf = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=V, n_positions=CONTEXT, n_embd=32, n_layer=2,
                                                  n_head=4))
    return _pair(hf, path)


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=4,
                                      bos_token_id=2, eos_token_id=3))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return _pair(tiny_gpt2(), tmp_path_factory.mktemp("gpt2-only"))


@pytest.fixture(scope="module")
def peaky_gpt2(tmp_path_factory):
    return _pair(tiny_gpt2(), tmp_path_factory.mktemp("gpt2-peaky"), std=0.2, norm_bias_std=0.2)


def prompt(T=5, seed=0, B=1):
    return torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(seed))


def left_padded_batch():
    """Prompts of 6, 3 and 5 tokens, left-padded with PAD."""
    rows = [prompt(6, seed=1)[0], prompt(3, seed=2)[0], prompt(5, seed=3)[0]]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def hf_generate(hf, ids, mask=None, **kw):
    kw.setdefault("pad_token_id", PAD)
    kw.setdefault("eos_token_id", None)
    with torch.no_grad():
        return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask,
                           do_sample=False, **kw)


def ours_generate(model, ids, mask=None, **kw):
    kw.setdefault("pad_token_id", PAD)
    return tk.generate(model, ids, mask, **kw)


def assert_same_tokens(ours, theirs):
    assert ours.shape == theirs.shape, (ours.tolist(), theirs.tolist())
    assert torch.equal(ours, theirs), (ours.tolist(), theirs.tolist())


def greedy_eos(model, ids, mask=None, step=3, max_new_tokens=12):
    """An EOS id that really occurs: the first token greedy decoding produces in row 0 at `step` or later
    (within max_new_tokens) that it has not produced before."""
    new = ours_generate(model, ids, mask, max_new_tokens=max_new_tokens)[0, ids.shape[1]:].tolist()
    return next(t for i, t in enumerate(new) if i >= step and t not in new[:i])


def beam_eos(model, ids, mask=None, first_step=2, **kw):
    """An EOS id that ends the best hypothesis of this beam search, or None: tried in turn, the tokens
    that greedy and beam search (without EOS) produce from `first_step` on."""
    T0 = ids.shape[1]
    candidates = []
    for num_beams in (1, kw["num_beams"]):
        out = ours_generate(model, ids, mask, **dict(kw, num_beams=num_beams, eos_token_id=None))
        candidates += [t for t in out[:, T0 + first_step:].T.flatten().tolist() if t not in candidates]
    for eos in candidates:
        if eos == PAD or eos in ids.flatten().tolist():
            continue
        if eos in ours_generate(model, ids, mask, **dict(kw, eos_token_id=eos))[:, T0 + first_step:].flatten().tolist():
            return eos
    return None


def beam_case(model, **kw):
    """A prompt and an EOS id for which EOS ends the best hypothesis (the test asserts it again), so a
    beam-search test cannot pass without EOS playing its part."""
    for seed in range(8):
        ids = prompt(seed=seed)
        eos = beam_eos(model, ids, **kw)
        if eos is not None:
            return ids, eos
    raise AssertionError(f"no prompt/EOS pair makes EOS end the best hypothesis with {kw}")


# --- greedy --------------------------------------------------------------------------------------

def test_greedy_matches_transformers(models):
    ours, hf = models
    ids = prompt()
    out = ours_generate(ours, ids, max_new_tokens=20)
    assert_same_tokens(out, hf_generate(hf, ids, max_new_tokens=20))
    assert out.shape == (1, 25) and torch.equal(out[:, :5], ids)
    # Every token is the argmax of a full forward over what precedes it (no KV cache involved).
    with torch.no_grad():
        for t in range(5, 25):
            assert int(out[0, t]) == int(ours(input_ids=out[:, :t]).logits[0, -1].argmax())


def test_greedy_left_padded_batch_matches_transformers(models):
    ours, hf = models
    ids, mask = left_padded_batch()
    out = ours_generate(ours, ids, mask, max_new_tokens=12)
    assert_same_tokens(out, hf_generate(hf, ids, mask, max_new_tokens=12))
    # Each row continues as it does alone, unpadded.
    for row in range(3):
        alone = ids[row:row + 1, mask[row].bool()]
        assert torch.equal(out[row, ids.shape[1]:], ours_generate(ours, alone, max_new_tokens=12)[0, alone.shape[1]:])


def test_greedy_with_eos_pads_finished_rows(models):
    ours, hf = models
    ids, mask = left_padded_batch()
    eos = greedy_eos(ours, ids, mask, step=3)
    out = ours_generate(ours, ids, mask, max_new_tokens=12, eos_token_id=eos)
    assert_same_tokens(out, hf_generate(hf, ids, mask, max_new_tokens=12, eos_token_id=eos))
    rows = out[:, ids.shape[1]:].tolist()
    first = rows[0].index(eos)
    assert first >= 3 and all(t == PAD for t in rows[0][first + 1:])
    # Generation stops as soon as every row has ended.
    ends = [row.index(eos) if eos in row else None for row in rows]
    assert out.shape[1] == ids.shape[1] + (12 if None in ends else max(ends) + 1)


@pytest.mark.parametrize("length", [1, 2, 3, 6])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_logits_processors_match_transformers(length, n):
    """Repetition penalty and n-gram blocking, on random scores of both signs, as transformers' processors."""
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(length * 10 + n)
    seqs = torch.randint(0, 4, (3, length), generator=g)   # a small alphabet, so n-grams repeat
    if length == 6 and n > 1:
        seqs[:, -(n - 1):] = seqs[:, :n - 1]                # ends with the prefix of its first n-gram
    scores = torch.randn(3, 6, generator=g) * 2
    assert bool((scores < 0).any()) and bool((scores > 0).any())
    expected = RepetitionPenaltyLogitsProcessor(1.3)(seqs, scores.clone())
    torch.testing.assert_close(apply_repetition_penalty(seqs, scores, 1.3), expected, atol=0, rtol=0)
    expected = NoRepeatNGramLogitsProcessor(n)(seqs, scores.clone())
    got = ban_repeated_ngrams(seqs, scores, n)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    torch.testing.assert_close(got[~torch.isinf(got)], expected[~torch.isinf(expected)], atol=0, rtol=0)
    if length == 6:
        assert bool(torch.isinf(got).any())   # the case really bans something


def test_finished_rows_are_filled_with_pad_else_eos(gpt2):
    ours, _ = gpt2
    ids, mask = left_padded_batch()
    eos = greedy_eos(ours, ids, mask, step=2)
    T0 = ids.shape[1]

    def fill_after_eos(out):
        row = out[0, T0:].tolist()
        return set(row[row.index(eos) + 1:])

    assert fill_after_eos(tk.generate(ours, ids, mask, max_new_tokens=12, eos_token_id=eos,
                                      pad_token_id=7)) == {7}
    assert fill_after_eos(tk.generate(ours, ids, mask, max_new_tokens=12, eos_token_id=eos)) == {eos}
    ours.config.pad_token_id = 9              # the model's own pad id comes before EOS
    try:
        assert fill_after_eos(tk.generate(ours, ids, mask, max_new_tokens=12, eos_token_id=eos)) == {9}
    finally:
        ours.config.pad_token_id = None


def test_repetition_penalty_matches_transformers(models):
    ours, hf = models
    ids = prompt()
    plain = ours_generate(ours, ids, max_new_tokens=20)
    out = ours_generate(ours, ids, max_new_tokens=20, repetition_penalty=1.3)
    assert_same_tokens(out, hf_generate(hf, ids, max_new_tokens=20, repetition_penalty=1.3))
    assert not torch.equal(out, plain)  # the penalty changed the continuation


def has_repeated_ngram(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_beam_search_with_repetition_penalty_matches_transformers(peaky_gpt2):
    """In beam search the penalty meets log-probabilities, all negative: the multiply branch."""
    ours, hf = peaky_gpt2
    ids = prompt(seed=1)
    kw = dict(max_new_tokens=10, num_beams=3, repetition_penalty=1.3)
    out = ours_generate(ours, ids, **kw)
    assert not torch.equal(out, ours_generate(ours, ids, max_new_tokens=10, num_beams=3))
    assert_same_tokens(out, hf_generate(hf, ids, **kw))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_repeat_ngram_matches_transformers(models, num_beams):
    ours, hf = models
    ids = prompt()
    plain = ours_generate(ours, ids, max_new_tokens=20, num_beams=num_beams)
    assert has_repeated_ngram(plain[0].tolist(), 2)  # without the rule, this continuation repeats a bigram
    out = ours_generate(ours, ids, max_new_tokens=20, num_beams=num_beams, no_repeat_ngram_size=2)
    assert_same_tokens(out, hf_generate(hf, ids, max_new_tokens=20, num_beams=num_beams, no_repeat_ngram_size=2))
    assert not has_repeated_ngram(out[0].tolist(), 2)


# --- beam search ---------------------------------------------------------------------------------

BEAM_GRID = [(k, lp, es) for k in (3, 4) for lp in (0.5, 1.0, 2.0) for es in (True, False, "never")]


def _beam_grid(model, ids, eos):
    return {(k, lp, es): ours_generate(model, ids, max_new_tokens=10, num_beams=k, length_penalty=lp,
                                       early_stopping=es, eos_token_id=eos) for k, lp, es in BEAM_GRID}


def _settings_matter(results) -> bool:
    distinct = {tuple(r[0].tolist()) for r in results.values()}
    never_differs = any(not torch.equal(results[(k, lp, False)], results[(k, lp, "never")])
                        if results[(k, lp, False)].shape == results[(k, lp, "never")].shape else True
                        for k, lp, _ in BEAM_GRID)
    return len(distinct) >= 4 and never_differs


@pytest.fixture(scope="module")
def beam_grid_case(peaky_gpt2):
    """A prompt and EOS id (a token greedy decoding produces at step 2-4) under which the beam settings
    of the grid pick at least 4 different results, and early_stopping False and "never" differ: the
    settings matter on this case."""
    ours, _ = peaky_gpt2
    for seed in range(8):
        ids = prompt(seed=seed)
        greedy = ours_generate(ours, ids, max_new_tokens=10)[0, ids.shape[1]:].tolist()
        for step in (3, 2, 4):
            eos = greedy[step]
            if eos in greedy[:step] or eos == PAD:
                continue
            results = _beam_grid(ours, ids, eos)
            if _settings_matter(results):
                return ids, eos, results
    raise AssertionError("no prompt makes the beam settings matter on these weights")


def test_beam_search_settings_change_the_result(beam_grid_case):
    ids, eos, results = beam_grid_case
    assert _settings_matter(results)
    lengths = {key: out.shape[1] for key, out in results.items()}
    assert len(set(lengths.values())) >= 2          # hypotheses of different lengths won
    assert sum(eos in out[0, ids.shape[1]:].tolist() for out in results.values()) >= len(BEAM_GRID) // 2


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", BEAM_GRID)
def test_beam_search_matches_transformers(peaky_gpt2, beam_grid_case, num_beams, length_penalty, early_stopping):
    ours, hf = peaky_gpt2
    ids, eos, results = beam_grid_case
    kw = dict(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty,
              early_stopping=early_stopping)
    out = results[(num_beams, length_penalty, early_stopping)]
    if eos not in out[0, ids.shape[1]:].tolist():   # this setting prefers hypotheses without that EOS:
        ids, eos = beam_case(ours, **kw)            # find one where EOS ends the best hypothesis
        out = ours_generate(ours, ids, eos_token_id=eos, **kw)
    assert eos in out[0, ids.shape[1]:].tolist()  # EOS really ended the best hypothesis
    assert_same_tokens(out, hf_generate(hf, ids, eos_token_id=eos, **kw))


def test_beam_search_matches_transformers_varied_weights(gpt2):
    ours, hf = gpt2
    kw = dict(max_new_tokens=10, num_beams=4, length_penalty=1.0, early_stopping=False)
    ids, eos = beam_case(ours, **kw)
    out = ours_generate(ours, ids, eos_token_id=eos, **kw)
    assert eos in out[0, ids.shape[1]:].tolist()
    assert_same_tokens(out, hf_generate(hf, ids, eos_token_id=eos, **kw))


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", [(3, 1.0, False), (4, 2.0, True)])
def test_beam_search_matches_transformers_both_models(models, num_beams, length_penalty, early_stopping):
    ours, hf = models
    kw = dict(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty,
              early_stopping=early_stopping)
    ids, eos = beam_case(ours, **kw)
    kw["eos_token_id"] = eos
    out = ours_generate(ours, ids, **kw)
    assert eos in out[0, ids.shape[1]:].tolist()
    assert_same_tokens(out, hf_generate(hf, ids, **kw))
    no_eos = dict(kw, eos_token_id=None)  # without EOS every hypothesis runs to max_new_tokens
    out = ours_generate(ours, ids, **no_eos)
    assert out.shape == (1, ids.shape[1] + 10)
    assert_same_tokens(out, hf_generate(hf, ids, **no_eos))


@pytest.mark.parametrize("early_stopping", [True, False])
def test_beam_search_left_padded_batch_peaky(peaky_gpt2, early_stopping):
    """Rows that finish at different steps: a finished row must wait while the others search."""
    ours, hf = peaky_gpt2
    ids, mask = left_padded_batch()
    kw = dict(max_new_tokens=10, num_beams=3, early_stopping=early_stopping)
    kw["eos_token_id"] = eos = beam_eos(ours, ids, mask, **kw)
    assert eos is not None
    out = ours_generate(ours, ids, mask, **kw)
    assert eos in out[:, ids.shape[1]:].flatten().tolist()
    assert_same_tokens(out, hf_generate(hf, ids, mask, **kw))


def test_beam_search_left_padded_batch_matches_transformers(models):
    ours, hf = models
    ids, mask = left_padded_batch()
    kw = dict(max_new_tokens=8, num_beams=3)
    kw["eos_token_id"] = eos = beam_eos(ours, ids, mask, **kw)
    assert eos is not None
    out = ours_generate(ours, ids, mask, **kw)
    assert eos in out[:, ids.shape[1]:].flatten().tolist()
    assert_same_tokens(out, hf_generate(hf, ids, mask, **kw))


# --- sampling ------------------------------------------------------------------------------------

def _sample(model, seed, ids=None, **kw):
    g = torch.Generator().manual_seed(seed)
    return ours_generate(model, prompt() if ids is None else ids, max_new_tokens=15, do_sample=True,
                         generator=g, **kw)


def test_sampling_is_reproducible_with_a_seed(gpt2):
    ours, _ = gpt2
    a, b, c = _sample(ours, 0), _sample(ours, 0), _sample(ours, 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, ours_generate(ours, prompt(), max_new_tokens=15))  # it is not greedy


def test_top_k_1_and_tiny_top_p_are_greedy(gpt2):
    ours, _ = gpt2
    ids, mask = left_padded_batch()
    greedy = ours_generate(ours, ids, mask, max_new_tokens=15)
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(ours_generate(ours, ids, mask, max_new_tokens=15, do_sample=True, top_k=1, generator=g),
                           greedy)
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(ours_generate(ours, ids, mask, max_new_tokens=15, do_sample=True, top_p=1e-6,
                                         generator=g), greedy)


def test_temperature_changes_the_distribution(gpt2):
    ours, _ = gpt2
    scores = torch.randn(4, V) * 3
    for t in (0.5, 2.0):
        probs = warp_for_sampling(scores, t, 0, 1.0).softmax(-1)
        torch.testing.assert_close(probs, (scores / t).softmax(-1))
        assert (probs - scores.softmax(-1)).abs().max() > 1e-3
    # Sharper: a near-zero temperature samples the argmax; a high one does not.
    greedy = ours_generate(ours, prompt(), max_new_tokens=15)
    assert torch.equal(_sample(ours, 0, temperature=1e-5), greedy)
    hot = [_sample(ours, s, temperature=5.0)[0, 5:] for s in range(3)]
    assert all(not torch.equal(h, greedy[0, 5:]) for h in hot)
    assert len({tok for h in hot for tok in h.tolist()}) > len(set(greedy[0, 5:].tolist()))


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (20, 1.0), (0, 0.3), (0, 0.9), (10, 0.8)])
def test_top_k_top_p_keep_the_same_tokens_as_transformers(top_k, top_p):
    scores = torch.randn(6, V, generator=torch.Generator().manual_seed(top_k)) * 2
    ours = warp_for_sampling(scores, 1.0, top_k, top_p)
    theirs = scores
    if top_k:
        theirs = TopKLogitsWarper(top_k)(None, theirs)
    if top_p < 1.0:
        theirs = TopPLogitsWarper(top_p)(None, theirs)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert bool(torch.isinf(ours).any()) and bool((~torch.isinf(ours)).any(-1).all())
    torch.testing.assert_close(ours[~torch.isinf(ours)], scores[~torch.isinf(ours)])


# --- stop strings, streaming ---------------------------------------------------------------------

class HexTokenizer:
    """A tokenizer-like object: token i reads as two hex digits, so strings can span tokens."""

    def decode(self, ids, skip_special_tokens=False):   # the Tokenizer.decode signature; no specials here
        return "".join(f"{int(i):02x}" for i in ids)


def test_stop_strings_stop_generation(gpt2):
    ours, _ = gpt2
    ids, mask = left_padded_batch()
    T0 = ids.shape[1]
    full = ours_generate(ours, ids, mask, max_new_tokens=15)
    tok = HexTokenizer()
    text = tok.decode(full[0, T0:].tolist())
    stop = text[9:12]  # spans the 5th and 6th new tokens of row 0
    end = next(i for i in range(1, 16) if stop in tok.decode(full[0, T0:T0 + i].tolist()))
    assert end <= 6
    out = ours_generate(ours, ids, mask, max_new_tokens=15, stop_strings=[stop], tokenizer=tok)
    assert torch.equal(out[0], torch.cat([full[0, :T0 + end], torch.full((out.shape[1] - T0 - end,), PAD)]))
    # Rows that do not meet the string keep going, unchanged.
    for row in (1, 2):
        if stop not in tok.decode(full[row, T0:].tolist()):
            assert torch.equal(out[row], full[row, :out.shape[1]])
    # A stop string in every row ends generation early.
    per_row = [tok.decode(full[r, T0 + 1:T0 + 2].tolist()) for r in range(3)]
    early = ours_generate(ours, ids, mask, max_new_tokens=15, stop_strings=per_row, tokenizer=tok)
    assert early.shape[1] < full.shape[1]
    with pytest.raises(GenerationError, match="tokenizer"):
        ours_generate(ours, ids, mask, max_new_tokens=5, stop_strings=["x"])


def test_streamer_receives_every_new_token(gpt2):
    ours, _ = gpt2
    ids, mask = left_padded_batch()
    received = []
    out = ours_generate(ours, ids, mask, max_new_tokens=10, streamer=lambda t: received.append(t.clone()))
    assert len(received) == 10
    assert torch.equal(torch.stack(received, 1), out[:, ids.shape[1]:])
    # TextStreamer prints row 0's text as it comes.
    buffer = io.StringIO()
    streamer = TextStreamer(HexTokenizer(), file=buffer)
    out = ours_generate(ours, ids, mask, max_new_tokens=10, streamer=streamer)
    streamer.end()
    assert buffer.getvalue() == HexTokenizer().decode(out[0, ids.shape[1]:].tolist()) + "\n"


# --- context and argument errors -----------------------------------------------------------------

def test_prompt_longer_than_context(gpt2):
    ours, _ = gpt2
    long = prompt(T=60, seed=5)
    with pytest.raises(GenerationError, match="context"):
        ours_generate(ours, long, max_new_tokens=10)
    out = ours_generate(ours, long, max_new_tokens=10, truncate_prompt=True)
    assert out.shape == (1, CONTEXT)
    assert torch.equal(out[:, :54], long[:, -54:])
    assert torch.equal(out, ours_generate(ours, long[:, -54:], max_new_tokens=10))
    # Exactly filling the context is allowed; no room for even one prompt token is not.
    assert ours_generate(ours, long[:, :54], max_new_tokens=10).shape == (1, CONTEXT)
    with pytest.raises(GenerationError):
        ours_generate(ours, long, max_new_tokens=CONTEXT, truncate_prompt=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": -3}, "max_new_tokens"),
    ({"do_sample": True, "temperature": 0.0}, "temperature"),
    ({"num_beams": 3, "do_sample": True, "max_new_tokens": 5}, "beam")])
def test_bad_arguments_raise(gpt2, kwargs, match):
    ours, _ = gpt2
    with pytest.raises(GenerationError, match=match):
        ours_generate(ours, prompt(), **kwargs)


def test_generate_restores_training_mode(gpt2):
    ours, _ = gpt2
    ours.train()
    try:
        a = ours_generate(ours, prompt(), max_new_tokens=5)
        assert ours.training
        assert torch.equal(a, ours_generate(ours, prompt(), max_new_tokens=5))  # dropout was off inside
    finally:
        ours.eval()


# --- GenerationConfig: checked once, overrides, generation_config.json ---------------------------

@pytest.mark.parametrize("settings,match", [
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"max_new_tokens": -5}, "max_new_tokens must be at least 1"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
    ({"num_beams": 0}, "num_beams must be at least 1"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"temperature": float("nan")}, "temperature must be > 0"),
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
    ({"repetition_penalty": -1.3}, "repetition_penalty must be > 0"),
    ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size must be >= 0"),
    ({"num_beams": 4, "do_sample": True}, "beam search with sampling"),
    ({"early_stopping": "sometimes"}, "early_stopping must be True, False or 'never'"),
    ({"early_stopping": 1}, "early_stopping must be True, False or 'never'"),
    ({"do_sample": "yes"}, "do_sample must be true or false"),
    ({"eos_token_id": -1}, "eos_token_id must be"),
    ({"eos_token_id": [3, "x"]}, "eos_token_id must be"),
    ({"pad_token_id": 1.5}, "pad_token_id must be"),
    ({"stop_strings": [""]}, "stop_strings must be a list of non-empty strings"),
    ({"length_penalty": "long"}, "length_penalty must be a number"),
])
def test_impossible_settings_are_generation_errors(gpt2, settings, match):
    with pytest.raises(GenerationError, match=match):
        tk.GenerationConfig(**settings)
    ours, _ = gpt2
    with pytest.raises(GenerationError, match=match):        # the same check when given to generate
        ours_generate(ours, prompt(), **settings)
    with pytest.raises(GenerationError, match=match):        # and when replacing a valid config's field
        tk.GenerationConfig().replace(**settings)


def test_settings_that_are_possible_pass():
    cfg = tk.GenerationConfig(max_new_tokens=1, num_beams=5, top_p=1.0, top_k=0, early_stopping="never",
                              eos_token_id=(2, 3), stop_strings="END", length_penalty=-1.0)
    assert cfg.eos_ids == [2, 3] and cfg.eos_token_id == [2, 3] and cfg.stop_strings == ["END"]
    assert tk.GenerationConfig(eos_token_id=0).eos_ids == [0] and tk.GenerationConfig().eos_ids == []


def test_unknown_settings_are_errors(gpt2):
    ours, _ = gpt2
    with pytest.raises(GenerationError, match=r"unknown generation setting\(s\) \['max_tokens'\]"):
        ours_generate(ours, prompt(), max_tokens=5)
    with pytest.raises(GenerationError, match="unknown GenerationConfig fields"):
        tk.GenerationConfig.from_dict({"max_new_tokens": 5, "beams": 2})
    with pytest.raises(GenerationError, match="config must be a GenerationConfig"):
        tk.generate(ours, prompt(), None, {"max_new_tokens": 5})


def test_overrides_replace_fields_of_the_config(gpt2):
    ours, _ = gpt2
    ids = prompt()
    cfg = tk.GenerationConfig(max_new_tokens=4, num_beams=3, no_repeat_ngram_size=2)
    out = tk.generate(ours, ids, config=cfg, pad_token_id=PAD)
    assert torch.equal(out, ours_generate(ours, ids, max_new_tokens=4, num_beams=3, no_repeat_ngram_size=2))
    longer = tk.generate(ours, ids, config=cfg, pad_token_id=PAD, max_new_tokens=20)
    assert longer.shape == (1, 5 + 20)
    assert torch.equal(longer, ours_generate(ours, ids, max_new_tokens=20, num_beams=3, no_repeat_ngram_size=2))
    assert not torch.equal(longer, ours_generate(ours, ids, max_new_tokens=20, num_beams=3))  # the rule applied
    assert cfg.max_new_tokens == 4                            # the config itself is unchanged
    # The combination is checked, not each part: sampling on top of a beam config is refused.
    with pytest.raises(GenerationError, match="beam search with sampling"):
        tk.generate(ours, ids, config=cfg, do_sample=True)
    assert tk.generate(ours, ids, config=cfg, do_sample=True, num_beams=1).shape == (1, 5 + 4)


def test_the_models_generation_config_is_the_default(gpt2):
    ours, _ = gpt2
    ids = prompt()
    before = ours.generation_config
    try:
        plain = tk.GenerationConfig(max_new_tokens=20, pad_token_id=PAD)
        ours.generation_config = plain.replace(repetition_penalty=1.3)
        out = tk.generate(ours, ids)
        # An explicit config replaces the model's as a whole.
        assert torch.equal(out, tk.generate(ours, ids, config=plain, repetition_penalty=1.3))
        assert not torch.equal(out, tk.generate(ours, ids, config=plain))
        # Keywords go on top of the model's.
        assert torch.equal(tk.generate(ours, ids, max_new_tokens=3), out[:, :5 + 3])
        assert torch.equal(tk.generate(ours, ids, repetition_penalty=1.0), tk.generate(ours, ids, config=plain))
    finally:
        ours.generation_config = before


def test_generation_config_json_round_trip_and_transformers_reads_it(tmp_path):
    from transformers import GenerationConfig as HFGenerationConfig

    cfg = tk.GenerationConfig(max_new_tokens=7, num_beams=3, length_penalty=0.6, early_stopping="never",
                              eos_token_id=[3, 5], pad_token_id=1, no_repeat_ngram_size=2, repetition_penalty=1.2,
                              top_k=0, stop_strings=["\n\n"], truncate_prompt=True)
    path = cfg.save_pretrained(tmp_path)
    assert path == tmp_path / "generation_config.json"
    assert [p.name for p in tmp_path.iterdir()] == ["generation_config.json"]      # no temporary left behind
    assert tk.GenerationConfig.from_pretrained(tmp_path) == cfg
    assert tk.GenerationConfig.from_dict(cfg.to_dict()) == cfg
    theirs = HFGenerationConfig.from_pretrained(tmp_path)
    for name in ("max_new_tokens", "do_sample", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty",
                 "no_repeat_ngram_size", "length_penalty", "early_stopping", "eos_token_id", "pad_token_id",
                 "stop_strings"):
        assert getattr(theirs, name) == getattr(cfg, name), name
    # Saving again replaces the file.
    cfg.replace(max_new_tokens=9).save_pretrained(tmp_path)
    assert tk.GenerationConfig.from_pretrained(tmp_path).max_new_tokens == 9


def test_reading_a_transformers_generation_config(tmp_path):
    from transformers import GenerationConfig as HFGenerationConfig

    HFGenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, eos_token_id=3, bos_token_id=2,
                       decoder_start_token_id=2, forced_eos_token_id=3).save_pretrained(tmp_path)
    cfg = tk.GenerationConfig.from_pretrained(tmp_path)
    # Keys absent from their file mean their defaults: top_k 50, not ours (0).
    assert cfg == tk.GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, eos_token_id=3, top_k=50)
    # Their decoder_start_token_id is dropped only when it is the model's own.
    with pytest.raises(GenerationError, match="decoder_start_token_id=2"):
        tk.GenerationConfig.from_pretrained(tmp_path, tk.ModelConfig(decoder_start_token_id=0))
    assert tk.GenerationConfig.from_pretrained(tmp_path, tk.ModelConfig(decoder_start_token_id=2)) == cfg


@pytest.mark.parametrize("settings,match", [
    ({"min_length": 5}, "min_length=5"),
    ({"forced_bos_token_id": 0}, "forced_bos_token_id=0"),
    ({"forced_eos_token_id": 4, "eos_token_id": 3}, "forced_eos_token_id=4"),
    ({"max_length": 50}, "give max_new_tokens instead"),
    ({"num_return_sequences": 2, "do_sample": True}, "num_return_sequences=2"),
])
def test_transformers_settings_we_would_not_honour_are_refused(tmp_path, settings, match):
    from transformers import GenerationConfig as HFGenerationConfig

    HFGenerationConfig(**settings).save_pretrained(tmp_path)
    with pytest.raises(GenerationError, match=match) as info:
        tk.GenerationConfig.from_pretrained(tmp_path)
    assert "generation_config.json" in str(info.value) and "remove these keys" in str(info.value)


def test_max_length_beside_max_new_tokens_is_dropped(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"max_length": 20, "max_new_tokens": 5, "num_beams": 2}')
    assert tk.GenerationConfig.from_pretrained(tmp_path) == tk.GenerationConfig(max_new_tokens=5, num_beams=2,
                                                                                  top_k=50)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not readable as JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"max_new_tokens": -1}', "max_new_tokens must be at least 1"),
    ('{"temperature": "hot"}', "temperature must be a number"),
])
def test_a_malformed_generation_config_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(GenerationError, match=match) as info:
        tk.GenerationConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "generation_config.json") in str(info.value)
    tk.build("gpt2-tiny").save_pretrained(tmp_path)
    with pytest.raises(GenerationError, match=match):       # tk.load reads it too
        tk.load(tmp_path)


def test_absent_generation_config(tmp_path):
    assert tk.GenerationConfig.from_pretrained(tmp_path) is None
    model = tk.build("gpt2-tiny")
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()
    assert getattr(tk.load(tmp_path), "generation_config", None) is None


def test_a_saved_generation_config_comes_back_with_the_model(gpt2, tmp_path):
    ours, _ = gpt2
    ids, mask = left_padded_batch()
    eos = greedy_eos(ours, ids, mask, step=2)
    cfg = tk.GenerationConfig(max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD, no_repeat_ngram_size=3)
    before = ours.generation_config
    try:
        ours.generation_config = cfg
        ours.save_pretrained(tmp_path)
    finally:
        ours.generation_config = before
    loaded = tk.load(tmp_path)
    assert loaded.generation_config == cfg
    out = tk.generate(loaded, ids, mask)                            # no settings: the checkpoint's
    assert torch.equal(out, ours_generate(ours, ids, mask, max_new_tokens=12, eos_token_id=eos,
                                          no_repeat_ngram_size=3))
    assert eos in out[0, ids.shape[1]:].tolist()                    # its EOS id played its part
    # transformers loads the same checkpoint with the same generation settings.
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert (hf.generation_config.max_new_tokens, hf.generation_config.eos_token_id) == (12, eos)
    # Saving the loaded model again keeps the file (convert, fine-tuning, the trainer's checkpoints).
    loaded.save_pretrained(tmp_path / "again")
    assert tk.GenerationConfig.from_pretrained(tmp_path / "again") == cfg


def test_an_encoder_decoders_generation_config_drives_transformers_generate(tmp_path):
    """transformers takes the decoder's start token from generation_config.json: it is written there."""
    from transformers import T5ForConditionalGeneration

    model = tk.build("t5-tiny")
    model.generation_config = tk.GenerationConfig(max_new_tokens=5, num_beams=2, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(tmp_path)
    ids = prompt(T=6)
    theirs = T5ForConditionalGeneration.from_pretrained(tmp_path).generate(ids)   # the file's settings only
    ours = tk.generate(tk.load(tmp_path), ids)
    assert ours.shape == (1, 1 + 5) and theirs[0, 0] == model.config.decoder_start_token_id
    assert_same_tokens(ours, theirs)


def test_settings_we_cannot_honour_do_not_stop_tk_load_but_stop_generate(tmp_path):
    """A checkpoint whose generation_config.json asks for something we do not implement loads (its weights
    are usable), but generate refuses to decode with those settings until given the caller's own."""
    import json

    tk.build("gpt2-tiny").save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"max_new_tokens": 4, "eos_token_id": 2, "forced_eos_token_id": 0, "min_new_tokens": 3,
         "use_cache": True, "transformers_version": "4.50.0"}))
    with pytest.raises(GenerationError, match="does not implement forced_eos_token_id=0, min_new_tokens=3"):
        tk.GenerationConfig.from_pretrained(tmp_path)
    model = tk.load(tmp_path)
    assert model.generation_config.unsupported == {"forced_eos_token_id": 0, "min_new_tokens": 3}
    ids = prompt()
    with pytest.raises(GenerationError, match="forced_eos_token_id=0") as info:
        tk.generate(model, ids, max_new_tokens=2)
    assert "generation_config.json" in str(info.value) and "config=tk.GenerationConfig" in str(info.value)
    kept = model.generation_config.replace()                  # our settings of the file, without theirs
    assert kept.unsupported == {} and (kept.max_new_tokens, kept.eos_token_id) == (4, 2)
    assert tk.generate(model, ids, config=kept, eos_token_id=None).shape == (1, 5 + 4)
    # Saved again (convert, fine-tuning), the file keeps what it said, for transformers.
    model.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    assert again["forced_eos_token_id"] == 0 and again["min_new_tokens"] == 3 and again["use_cache"] is True
    assert "transformers_version" not in again and again["max_new_tokens"] == 4


def test_tk_load_reads_the_generation_config_transformers_wrote(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)                      # bos 2, eos 3 in its generation_config.json
    model = tk.load(tmp_path)
    assert model.generation_config == tk.GenerationConfig(eos_token_id=3, top_k=50)


# --- the command line ----------------------------------------------------------------------------

@pytest.fixture
def char_checkpoint(tmp_path):
    from transformerkit.tokenization import char_tokenizer

    tok = char_tokenizer("".join(f"Line {i}: the quick brown fox.\n" for i in range(20)))
    directory = tmp_path / "ckpt"
    tk.build("gpt2-tiny", vocab_size=tok.vocab_size, max_position=64).save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.mark.parametrize("flags,match", [
    (["--max-new-tokens", "-5"], "max_new_tokens must be at least 1, got -5"),
    (["--max-new-tokens", "0"], "max_new_tokens must be at least 1, got 0"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--top-p", "0"], "top_p must be in"),
    (["--top-k", "-1"], "top_k must be >= 0"),
    (["--num-beams", "0"], "num_beams must be at least 1"),
    (["--repetition-penalty", "0"], "repetition_penalty must be > 0"),
    (["--no-repeat-ngram-size", "-1"], "no_repeat_ngram_size must be >= 0"),
    (["--stop", ""], "stop_strings must be a list of non-empty strings"),
])
def test_cli_generate_refuses_impossible_settings(char_checkpoint, capsys, flags, match):
    from transformerkit.cli import main

    assert main(["generate", str(char_checkpoint), "--prompt", "Line"] + flags) == 1
    captured = capsys.readouterr()
    assert captured.out == ""                                 # not even the prompt: nothing was generated
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tkit: error: ") and match in lines[0], captured.err


def test_cli_generate_negative_length_exits_1_without_traceback(char_checkpoint):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "transformerkit.cli", "generate", str(char_checkpoint),
                             "--max-new-tokens", "-5"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "tkit: error: max_new_tokens must be at least 1, got -5; ask for one or more new tokens"]


@pytest.mark.parametrize("argv,match", [
    (["translate", "{ckpt}", "hello", "--beams", "0"], "num_beams must be at least 1, got 0"),
    (["fill-mask", "{ckpt}", "to be <mask>", "--beams", "-2"], "num_beams must be at least 1, got -2"),
    (["train", "--data", "{corpus}", "--tokenizer", "char", "--sample-tokens", "0", "--out", "{run}"],
     "max_new_tokens must be at least 1, got 0"),
])
def test_cli_other_decoding_commands_check_first(char_checkpoint, tmp_path, capsys, argv, match):
    """Checked before any model loads (the GPT checkpoint is not even a translator) or any training runs."""
    from transformerkit.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Line 1: the quick brown fox.\n" * 50)
    argv = [a.format(ckpt=char_checkpoint, corpus=corpus, run=tmp_path / "run") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "run").exists()


def test_generate_text_refuses_a_negative_length(char_checkpoint):
    from transformerkit.generation import generate_text

    model, tok = tk.load(char_checkpoint), tk.load_tokenizer(char_checkpoint)
    with pytest.raises(GenerationError, match="max_new_tokens must be at least 1"):
        generate_text(model, tok, "Line", max_new_tokens=-5)     # it used to return "" silently
    assert len(generate_text(model, tok, "Line", max_new_tokens=3, do_sample=False)[0]) == 3
