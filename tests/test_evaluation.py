"""tk.perplexity and tk.loglikelihood against transformers' models on the same random weights (a tiny
GPT-2 with the real GPT-2 BPE, a tiny LLaMA with SmolLM2's tokenizer), their batching, and their errors."""
from __future__ import annotations

import math

import pytest
import torch

import transformerkit as tk
from random_weights import randomize_
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import Tokenizer

transformers = pytest.importorskip("transformers")

CONTEXT = 64
TEXT = ("The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times, "
        "it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch "
        "of incredulity,\nit was the season of Light, it was the season of Darkness. Caf\u00e9s et cr\u00e8me "
        "br\u00fbl\u00e9e.")


def hf_gpt2():
    config = transformers.GPT2Config(vocab_size=50257, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=50256, eos_token_id=50256)
    return transformers.GPT2LMHeadModel(config)


def hf_llama():
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    """(ours, theirs, tokenizer): one random-weight model loaded by both libraries."""
    torch.manual_seed(0)
    # Large weights: sharp predictions that depend on the context, so a window one token short shows.
    hf = randomize_(hf_gpt2() if request.param == "gpt2" else hf_llama(), std=1.0).eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    tok = tk.load_tokenizer("gpt2-vocab" if request.param == "gpt2" else "smollm2-135m-instruct")
    return tk.load(path).eval(), hf, tok


def prefix_id(tok):
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


@torch.no_grad()
def hf_strided_nll(hf, ids: list[int], max_length: int, stride: int) -> tuple[float, int]:
    """Hugging Face's "perplexity of fixed-length models" recipe, verbatim but for the window: each holds
    max_length + 1 tokens, whose last is only a target, so that the model reads max_length tokens and
    predicts max_length of them (the recipe's windows of max_length tokens predict max_length - 1)."""
    seq = torch.tensor([ids])
    n = seq.shape[1]
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + max_length + 1, n)
        trg_len = end - max(prev_end, 1)          # tokens no earlier window scored (the first has no context)
        input_ids = seq[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        loss = hf(input_ids, labels=target_ids).loss
        nll += loss.item() * trg_len
        count += trg_len
        prev_end = end
        if end == n:
            break
    return nll, count


@pytest.mark.parametrize("max_length,stride", [(16, 5), (16, 16), (9, 1)])
def test_perplexity_matches_transformers(pair, max_length, stride):
    ours, hf, tok = pair
    ids = [prefix_id(tok)] + tok.encode(TEXT, add_special_tokens=False)
    assert len(ids) > 3 * max_length                       # several windows
    result = tk.perplexity(ours, tok, TEXT, max_length=max_length, stride=stride)
    nll, count = hf_strided_nll(hf, ids, max_length, stride)
    assert result["tokens"] == count == len(ids) - 1       # every token of the text, once
    # Measured: within 1e-7 relative. One token of context more or less per window moves it by ~4e-3.
    assert result["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-3)
    assert result["word_perplexity"] == pytest.approx(math.exp(nll / len(TEXT.split())), rel=1e-3)
    assert result["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(TEXT.encode()), rel=1e-5)


def test_stride_changes_the_context_not_the_tokens(pair):
    """A smaller stride gives later tokens more context: a different sum over the same tokens."""
    ours, _, tok = pair
    disjoint = tk.perplexity(ours, tok, TEXT, max_length=16)
    strided = tk.perplexity(ours, tok, TEXT, max_length=16, stride=4)
    assert disjoint["tokens"] == strided["tokens"]
    assert abs(disjoint["nll"] - strided["nll"]) > 1e-3


def test_short_text_is_one_window_of_the_whole_context(pair):
    ours, hf, tok = pair
    text = "A short text, far below one window."
    ids = [prefix_id(tok)] + tok.encode(text, add_special_tokens=False)
    result = tk.perplexity(ours, tok, text)                # max_length: the model's context
    with torch.no_grad():
        logprobs = hf(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    nll = -logprobs.gather(-1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert result["tokens"] == len(ids) - 1
    assert result["nll"] == pytest.approx(nll, rel=1e-4)


def test_batched_equals_one_window_at_a_time(pair):
    ours, _, tok = pair
    one = tk.perplexity(ours, tok, TEXT, max_length=12, stride=5, batch_size=1)
    batched = tk.perplexity(ours, tok, TEXT, max_length=12, stride=5, batch_size=7)   # a short, padded last batch
    assert one["tokens"] == batched["tokens"]
    assert batched["nll"] == pytest.approx(one["nll"], rel=1e-5)


def test_without_bos_or_eos_the_first_token_is_context(pair):
    ours, _, tok = pair
    bare = Tokenizer(tok.backend)
    ids = tok.encode(TEXT, add_special_tokens=False)
    result = tk.perplexity(ours, bare, TEXT, max_length=16, stride=8)
    assert result["tokens"] == len(ids) - 1
    with_prefix = tk.perplexity(ours, tok, TEXT, max_length=16, stride=8)
    assert with_prefix["tokens"] == len(ids)


def test_model_mode_is_restored(pair):
    ours, _, tok = pair
    ours.train()
    try:
        tk.perplexity(ours, tok, "Some words to score.")
        assert ours.training
    finally:
        ours.eval()


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_length=16, stride=17), "stride"),
    (dict(max_length=16, stride=0), "stride"),
    (dict(max_length=CONTEXT + 1), "context"),
    (dict(max_length=1), "at least 2"),
])
def test_perplexity_refuses_impossible_windows(pair, kwargs, message):
    ours, _, tok = pair
    with pytest.raises(ConfigError, match=message):
        tk.perplexity(ours, tok, TEXT, **kwargs)


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_perplexity_refuses_an_empty_text(pair, text):
    ours, _, tok = pair
    with pytest.raises(DataError, match="empty"):
        tk.perplexity(ours, tok, text)


@pytest.mark.parametrize("preset", ["bert-tiny", "t5-tiny"])
def test_perplexity_needs_a_causal_lm(preset):
    model = tk.build(preset)
    tok = tk.load_tokenizer("gpt2-vocab")
    with pytest.raises(ConfigError, match="causal"):
        tk.perplexity(model, tok, TEXT, max_length=16)
