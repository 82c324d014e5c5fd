"""The continuous-batching engine against the one decoding loop: rows that join and leave a running batch
decode the same tokens as each request alone through tk.generate."""
import threading

import pytest
import torch

import transformerkit as tk
from transformerkit.batching import Engine, QueueFull, Request, RequestError
from transformerkit.errors import GenerationError

PROMPTS = ["Hello there", "The quick brown fox jumps over", "a", "One two three four five six seven eight", "xyz",
           "Mary had a little lamb"]
LENGTHS = [5, 12, 3, 9, 20, 7]


@pytest.fixture(scope="module")
def gpt2_tok():
    return tk.load_tokenizer("gpt2")


def alone(model, tok, prompt: str, n: int) -> str:
    """The greedy continuation of one prompt by tk.generate, as text (no EOS: the engine's is disabled too)."""
    ids = torch.tensor([tok.encode(prompt)])
    out = tk.generate(model, ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
    start = 1 if model.is_encoder_decoder else ids.shape[1]
    return tok.decode(out[0, start:].tolist(), skip_special_tokens=True)


def run_engine(model, tok, requests, max_batch=3):
    engine = Engine(model, tok, max_batch=max_batch, max_queue=len(requests))
    engine.eos_ids = []   # random weights: every row runs to its length, so rows leave at different steps
    engine.start()
    try:
        jobs = [engine.submit(r) for r in requests]
        return [job.wait() for job in jobs], engine
    finally:
        engine.stop()


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny", "bart-tiny"])
def test_batched_greedy_matches_generate_alone(preset, gpt2_tok):
    """Six prompts of different lengths and lengths to generate, three rows at a time: rows leave as they finish
    and waiting prompts join mid-flight (decoder-only: left-padded into the running KV cache; GQA and rotary
    positions for llama-tiny). BART's rows decode in fixed batches. Each reply equals its request decoded alone."""
    model = tk.build(preset, vocab_size=50257 if preset != "bart-tiny" else 50265).eval()
    requests = [Request(gpt2_tok.encode(p), max_new_tokens=n, temperature=0) for p, n in zip(PROMPTS, LENGTHS)]
    results, engine = run_engine(model, gpt2_tok, requests)
    for prompt, n, (result,) in zip(PROMPTS, LENGTHS, results):
        assert result.text == alone(model, gpt2_tok, prompt, n)
        assert result.finish_reason == "length" and result.completion_tokens == n
    assert engine.largest_batch == 3
    # Continuous batching decodes fewer steps than six requests one after another (sum of lengths).
    assert engine.steps < sum(LENGTHS)


def test_seeded_samples_do_not_depend_on_the_batch(gpt2_tok):
    """A seeded request's samples are drawn with its own generator: the same text alone or beside others,
    and its n continuations differ from each other."""
    model = tk.build("gpt2-tiny").eval()
    mine = Request(gpt2_tok.encode("Once upon a time"), max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=3)
    (alone_texts,), _ = run_engine(model, gpt2_tok, [mine])
    others = [Request(gpt2_tok.encode(p), max_new_tokens=5, temperature=1.0) for p in PROMPTS[:2]]
    again = Request(gpt2_tok.encode("Once upon a time"), max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=3)
    results, _ = run_engine(model, gpt2_tok, [others[0], again, others[1]], max_batch=5)
    assert [e.text for e in results[1]] == [e.text for e in alone_texts]
    assert len({e.text for e in alone_texts}) > 1


def test_stop_strings_end_a_row_and_are_not_reported(gpt2_tok):
    model = tk.build("gpt2-tiny").eval()
    full = alone(model, gpt2_tok, "Hello there", 20)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    (result,), _ = run_engine(model, gpt2_tok, [Request(gpt2_tok.encode("Hello there"), max_new_tokens=20,
                                                         temperature=0, stop=[stop])])
    assert result[0].finish_reason == "stop"
    assert result[0].text == full[:full.index(stop)]


def test_end_of_sequence_ends_a_row(gpt2_tok):
    """With the first greedy token as the EOS id, the row ends at once with no text (the EOS is counted)."""
    model = tk.build("gpt2-tiny").eval()
    ids = gpt2_tok.encode("Hello there")
    first = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    engine = Engine(model, gpt2_tok)
    engine.eos_ids = [first]
    engine.start()
    try:
        (result,) = engine.submit(Request(ids, max_new_tokens=5, temperature=0)).wait()
    finally:
        engine.stop()
    assert (result.text, result.finish_reason, result.completion_tokens) == ("", "stop", 1)


def test_bad_requests_and_a_full_queue_are_refused(gpt2_tok):
    model = tk.build("gpt2-tiny").eval()
    engine = Engine(model, gpt2_tok, max_batch=2, max_queue=1)
    with pytest.raises(RequestError, match="context") as e:
        engine.submit(Request([1] * 100, max_new_tokens=100))
    assert (e.value.field, e.value.code) == ("max_new_tokens", "context_length_exceeded")
    with pytest.raises(GenerationError, match="temperature"):
        engine.submit(Request([1], temperature=-0.5))
    with pytest.raises(GenerationError, match="n=3"):
        engine.submit(Request([1], n=3))
    engine.submit(Request([1]))           # not started: it waits in the queue
    with pytest.raises(QueueFull):
        engine.submit(Request([1]))


def test_cancelled_and_expired_jobs_leave(gpt2_tok):
    """A cancelled job's rows leave before the next step; a job whose time is up ends with "timeout"."""
    model = tk.build("gpt2-tiny").eval()
    engine = Engine(model, gpt2_tok, max_batch=2)
    engine.eos_ids = []
    release = threading.Event()
    engine.start()
    try:
        engine.call(release.wait)         # hold the engine thread until both jobs are queued
        cancelled = engine.submit(Request(gpt2_tok.encode("a"), max_new_tokens=100, temperature=0))
        expired = engine.submit(Request(gpt2_tok.encode("b"), max_new_tokens=100, temperature=0, timeout=0.0))
        cancelled.cancel()
        release.set()
        (result,) = expired.wait()
        assert result.finish_reason == "timeout"
        assert engine.call(lambda: len(engine.rows)).result(timeout=10) == 0
        assert cancelled.events.empty()
    finally:
        engine.stop()
