"""tk.perplexity and tk.loglikelihood against transformers' models on the same random weights (a tiny
GPT-2 with the real GPT-2 BPE, a tiny LLaMA with SmolLM2's tokenizer), their batching, and their errors."""
from __future__ import annotations

import json
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


# --- loglikelihood ------------------------------------------------------------------------------------

@torch.no_grad()
def hf_continuation(hf, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
    """Summed log-probability of the continuation and whether it is greedy, straight from transformers."""
    whole = (context_ids + continuation_ids)[-(CONTEXT + 1):]
    logprobs = hf(torch.tensor([whole[:-1]])).logits[0, -len(continuation_ids):].log_softmax(-1)  # (S, V)
    targets = torch.tensor(continuation_ids)
    return logprobs.gather(-1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())


def requests_with_expected_ids(tok):
    """(context, continuation) pairs and the token ids lm-evaluation-harness scores them as, spelled out."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    long_context = TEXT + " " + TEXT
    assert len(enc(long_context)) > CONTEXT                  # cut on the left
    return [
        (("The capital of France is", " Paris"), enc("The capital of France is"), enc(" Paris")),
        (("The sky is ", "blue"), enc("The sky is"), enc(" blue")),          # the space moves to the continuation
        (("", "Hello world"), [prefix_id(tok)], enc("Hello world")),         # empty context: BOS / EOS
        (("Question: what is 2+2?\nAnswer:", " 4, of course."), enc("Question: what is 2+2?\nAnswer:"),
         enc(" 4, of course.")),
        ((long_context, " the end of it all"), enc(long_context), enc(" the end of it all")),
    ]


def test_loglikelihood_matches_transformers(pair):
    ours, hf, tok = pair
    cases = requests_with_expected_ids(tok)
    results = tk.loglikelihood(ours, tok, [request for request, _, _ in cases], batch_size=2)
    assert len(results) == len(cases)
    for (logprob, greedy), (request, context_ids, continuation_ids) in zip(results, cases):
        expected, expected_greedy = hf_continuation(hf, context_ids, continuation_ids)
        assert logprob == pytest.approx(expected, abs=1e-4), request       # measured: within 1e-5
        assert greedy == expected_greedy
        assert logprob < 0


def test_loglikelihood_batched_equals_one_at_a_time(pair):
    ours, _, tok = pair
    requests = [request for request, _, _ in requests_with_expected_ids(tok)]
    one = [tk.loglikelihood(ours, tok, [r])[0] for r in requests]
    batched = tk.loglikelihood(ours, tok, requests, batch_size=3)
    assert [g for _, g in one] == [g for _, g in batched]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in one], abs=1e-4)
    assert len({round(lp, 3) for lp, _ in batched}) == len(requests)   # distinct scores, so order shows


def test_is_greedy(pair):
    """The model's own greedy continuation is greedy; a random one is not."""
    ours, hf, tok = pair
    context = "Once upon a time, in a land far away,"
    context_ids = tok.encode(context, add_special_tokens=False)
    with torch.no_grad():
        new = hf.generate(torch.tensor([context_ids]), max_new_tokens=4, do_sample=False,
                          pad_token_id=0)[0, len(context_ids):].tolist()
    continuation = tok.decode(new)
    # The pair is scored through text: it must tokenize back to the same tokens for the test to mean anything.
    assert tok.encode(context + continuation, add_special_tokens=False) == context_ids + new
    generator = torch.Generator().manual_seed(1)
    other = torch.randint(0, tok.vocab_size, (4,), generator=generator).tolist()
    random_text = " " + tok.decode(other).strip()
    (greedy_lp, greedy), (random_lp, random_greedy) = tk.loglikelihood(
        ours, tok, [(context, continuation), (context, random_text)])
    assert greedy is True
    assert random_greedy is False
    assert greedy_lp > random_lp


def test_loglikelihood_refuses_a_continuation_longer_than_the_context(pair):
    ours, _, tok = pair
    with pytest.raises(DataError, match="continuation"):
        tk.loglikelihood(ours, tok, [("Hi", " " + TEXT)])


@pytest.mark.parametrize("requests,message", [
    ([("A context", "")], "no tokens"),
    (("A context", " and more"), "list of"),
    ([("only a context",)], "pair"),
])
def test_loglikelihood_refuses_malformed_requests(pair, requests, message):
    ours, _, tok = pair
    with pytest.raises(DataError, match=message):
        tk.loglikelihood(ours, tok, requests)


def test_loglikelihood_needs_a_causal_lm():
    with pytest.raises(ConfigError, match="causal"):
        tk.loglikelihood(tk.build("bart-tiny"), tk.load_tokenizer("gpt2-vocab"), [("a", " b")])


# ----------------------------------------------------------------------------- tkit eval

def test_tkit_eval_perplexity_of_a_file_equals_the_library(pair, tmp_path, capsys):
    from transformerkit.cli import main

    ours, _, tok = pair
    folder = tmp_path / "model"
    ours.save_pretrained(folder)
    tok.save(folder)
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "result.json"
    assert main(["eval", str(folder), "--task", "perplexity", "--data", str(text_file), "--max-length", "32",
                 "--stride", "16", "--out", str(out)]) == 0
    expected = tk.perplexity(ours, tok, TEXT, max_length=32, stride=16)
    printed = capsys.readouterr().out
    assert f"perplexity {expected['perplexity']:.2f}" in printed
    saved = json.loads(out.read_text())
    assert saved["tokens"] == expected["tokens"] and saved["nll"] == pytest.approx(expected["nll"], rel=1e-9)


@pytest.mark.parametrize("argv,match", [
    (["--task", "hellaswag", "--data", "ptb"], "unknown task 'hellaswag'; known tasks: perplexity, bbc-news, "
                                                "tweets-sentiment, or the path of a .jsonl file"),
    (["--task", "bbc-news", "--data", "ptb"], "--data is for --task perplexity"),
    (["--task", "no-such-file.jsonl"], "task file no-such-file.jsonl does not exist"),
    (["--data", "ptb", "--split", "dev"], "no split 'dev'; its splits: train, valid, test"),
    (["--data", "no-such-corpus"], "neither a corpus name nor an existing file"),
    ([], "give --data"),
])
def test_tkit_eval_errors(argv, match, capsys):
    from transformerkit.cli import main

    assert main(["eval", "llama-tiny-not-loaded", *argv]) == 1
    assert match in capsys.readouterr().err


# ----------------------------------------------------------------------------- tk.evaluate (in-context learning)

from transformerkit.evaluation import ICLItem, ICLTask, load_icl_task, task_requests  # noqa: E402

QUESTIONS = [
    {"question": "2 + 2 =", "choices": ["4", "5", "22"], "answer": 0},
    {"question": "3 + 1 =", "choices": ["4", "31"], "answer": "4"},
    {"question": "1 + 1 =", "choices": ["2", "11", "3"], "answer": "2"},
    {"question": "5 + 5 =", "choices": ["10", "55"], "answer": 0},
    {"question": "The capital of France is", "choices": ["Paris", "a large cheese"], "answer": "Paris"},
    {"question": "Water freezes at", "choices": ["zero degrees Celsius", "hot"], "answer": 0},
    {"question": "The opposite of up is", "choices": ["down", "sideways", "up"], "answer": 0},
    {"question": "Cats say", "choices": ["meow", "woof"], "answer": 0},
]


def write_jsonl(path, rows, instruction="Answer each question."):
    lines = ([json.dumps({"instruction": instruction})] if instruction else []) + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def icl():
    """A tiny random LLaMA (context 256) with SmolLM2's tokenizer (which has a chat template)."""
    torch.manual_seed(0)
    return tk.build("llama-tiny").eval(), tk.load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def icl_folder(icl, tmp_path_factory):
    """The `icl` model and its tokenizer saved as one checkpoint folder, for `tkit eval`."""
    model, tok = icl
    folder = tmp_path_factory.mktemp("icl") / "model"
    model.save_pretrained(folder)
    tok.save(folder)
    return folder


@pytest.fixture
def qfile(tmp_path):
    return write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)


def test_evaluate_equals_a_hand_computation_from_loglikelihood(icl, qfile):
    model, tok = icl
    result = tk.evaluate(model, tok, qfile, shots=2, seed=3)
    prompts = task_requests(load_icl_task(qfile), tok, shots=2, seed=3, max_length=model.decoder_context)
    correct = correct_norm = 0
    for p, row in zip(prompts, QUESTIONS):
        lls = [ll for ll, _ in tk.loglikelihood(model, tok, [(p.context, c) for c in p.continuations])]
        assert p.continuations == [" " + c for c in row["choices"]]
        best = max(range(len(lls)), key=lambda i: lls[i])
        best_norm = max(range(len(lls)), key=lambda i: lls[i] / len(row["choices"][i]))
        correct += best == p.gold
        correct_norm += best_norm == p.gold
    assert [p.gold for p in prompts] == [0, 0, 0, 0, 0, 0, 0, 0]
    assert result["n"] == len(QUESTIONS) and result["task"] == "questions.jsonl"
    assert result["accuracy"] == correct / len(QUESTIONS)
    assert result["acc_norm"] == correct_norm / len(QUESTIONS)
    assert result["shots"] == result["shots_requested"] == 2 and result["shots_mean"] == 2
    assert result["prompt_tokens_max"] == max(p.tokens for p in prompts)


def test_prompt_format_and_shots_never_the_item_asked(icl, qfile):
    _, tok = icl
    task = load_icl_task(qfile)
    prompts = task_requests(task, tok, shots=3, seed=0)
    assert task.description == "Answer each question."
    for index, (p, row) in enumerate(zip(prompts, QUESTIONS)):
        assert len(p.shots) == 3 and len(set(p.shots)) == 3 and index not in p.shots
        # The item asked appears once, last; each shot is rendered with its gold answer.
        assert p.context.count(f"Question: {row['question']}\n") == 1
        assert p.context.endswith(f"\n\nQuestion: {row['question']}\nAnswer:")
        assert p.context.startswith("Answer each question.\n\nQuestion: ")
        for j in p.shots:
            shot = QUESTIONS[j]
            gold = shot["answer"] if isinstance(shot["answer"], str) else shot["choices"][shot["answer"]]
            assert f"Question: {shot['question']}\nAnswer: {gold}\n\n" in p.context


def test_shots_come_from_train_only():
    tok = tk.load_tokenizer("gpt2-vocab")
    train = [ICLItem(f"train text {i}", ("yes", "no"), i % 2, f"train item {i}") for i in range(10)]
    test = [ICLItem(f"test text {i}", ("yes", "no"), 0, f"test item {i}") for i in range(5)]
    task = ICLTask("toy", "Say yes or no.", "Text: {text}\nLabel:", train, test)
    for p in task_requests(task, tok, shots=4, seed=1):
        assert p.context.count("test text") == 1 and p.context.count("train text") == 4
        for j in p.shots:
            assert f"Text: train text {j}\nLabel: {('yes', 'no')[j % 2]}\n\n" in p.context


def test_same_seed_same_prompts_other_seed_other_prompts(icl, qfile):
    _, tok = icl
    task = load_icl_task(qfile)
    contexts = [[p.context for p in task_requests(task, tok, shots=3, seed=s)] for s in (0, 0, 1)]
    assert contexts[0] == contexts[1]
    assert contexts[0] != contexts[2]
    # Item i's shots do not depend on how many items are asked.
    assert [p.context for p in task_requests(task, tok, shots=3, seed=0, limit=3)] == contexts[0][:3]


def test_acc_norm_divides_by_the_choice_length_in_characters(icl, monkeypatch):
    import transformerkit.evaluation as ev

    model, tok = icl
    # A short choice scores -2 in all, a ten-character one -5 (-0.5 per character): accuracy takes the short
    # one, acc_norm the long one, the gold.
    item = ICLItem("pick", ("x", "yyyyyyyyyy"), 1, "test item 0")
    task = ICLTask("toy", "", "Q: {text}\nA:", [item], [item], one_pool=True)
    monkeypatch.setattr(ev, "loglikelihood", lambda model, tok, requests, batch_size: [(-2.0, False), (-5.0, False)])
    result = tk.evaluate(model, tok, task)
    assert result["accuracy"] == 0.0 and result["acc_norm"] == 1.0


def test_shots_are_dropped_to_fit_a_small_context(icl, tmp_path):
    model, tok = icl
    assert model.decoder_context == 256
    long = [{"question": " ".join(["word"] * 60) + f" number {i}?", "choices": ["yes", "no"], "answer": i % 2}
            for i in range(6)]
    path = write_jsonl(tmp_path / "long.jsonl", long)
    prompts = task_requests(load_icl_task(path), tok, shots=4, max_length=256)
    assert all(p.tokens <= 256 for p in prompts) and all(p.shots_requested == 4 for p in prompts)
    assert max(len(p.shots) for p in prompts) < 4
    unlimited = task_requests(load_icl_task(path), tok, shots=4, max_length=None)
    for cut, whole in zip(prompts, unlimited):
        assert whole.shots[:len(cut.shots)] == cut.shots      # the first shots drawn are kept
    result = tk.evaluate(model, tok, path, shots=4)
    assert result["shots"] < 4 and result["shots_requested"] == 4
    assert result["shots_mean"] == sum(len(p.shots) for p in prompts) / len(prompts)


def test_a_prompt_too_long_without_shots_is_an_error(icl, tmp_path):
    model, tok = icl
    rows = QUESTIONS[:2] + [{"question": " ".join(["word"] * 300), "choices": ["a", "b"], "answer": 0}]
    path = write_jsonl(tmp_path / "toolong.jsonl", rows)
    with pytest.raises(DataError, match=r"toolong.jsonl, line 4: the prompt is \d+ tokens with no shots, more than "
                                        "the model's context of 256"):
        tk.evaluate(model, tok, path, shots=1)


def test_chat_prompts_are_the_template_around_the_plain_prompt(icl, qfile):
    model, tok = icl
    task = load_icl_task(qfile)
    plain = task_requests(task, tok, shots=2, seed=0)
    chat = task_requests(task, tok, shots=2, seed=0, chat=True)
    opening = tok.apply_chat_template([{"role": "user", "content": "X"}], add_generation_prompt=True).split("X")[0]
    assert opening.startswith("<|im_start|>")
    for p, c in zip(plain, chat):
        assert c.context.startswith(opening + p.context)
        assert c.context == tok.apply_chat_template([{"role": "user", "content": p.context}],
                                                    add_generation_prompt=True)
        assert c.context.endswith("<|im_start|>assistant\n")
        assert c.continuations == [s[1:] for s in p.continuations]       # the reply: no leading space
    assert tk.evaluate(model, tok, qfile, shots=2, chat=True)["chat"] is True


def test_chat_without_a_template_is_an_error(qfile):
    tok = tk.load_tokenizer("gpt2-vocab")
    assert tok.chat_template is None
    with pytest.raises(ConfigError, match="chat template"):
        task_requests(load_icl_task(qfile), tok, chat=True)


def test_bbc_news_prompts_fit_smollm2_with_8_shots(icl):
    _, tok = icl
    task = load_icl_task("bbc-news")
    assert task.split == "test" and len(task.test) == 223
    assert [c for c in task.test[0].choices] == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(len(item.text.split()) <= 120 for item in task.train + task.test)
    prompts = task_requests(task, tok, shots=8, seed=0, limit=3, max_length=8192)
    train_texts = {item.text for item in task.train}
    for p in prompts:
        assert len(p.shots) == 8 and p.tokens < 2500
        assert p.context.startswith("Classify each news article by its topic: business, entertainment, politics, "
                                    "sports or tech.\n\nArticle: ")
        assert p.context.endswith(f"Article: {p.item.text}\nTopic:") and p.continuations[0] == " business"
        assert all(task.train[j].text in train_texts for j in p.shots)
        assert p.item.text not in train_texts


@pytest.mark.parametrize("rows,match", [
    (QUESTIONS[:2] + ["not an object"], "line 4: a JSON str"),
    (QUESTIONS[:2] + [{"question": "q", "choices": ["a", "b"]}], "line 4: no 'answer'"),
    (QUESTIONS[:1] + [{"question": "q", "choices": ["a"], "answer": 0}], "line 3: 1 choice.s.; a multiple-choice "
                                                                           "question needs at least two"),
    (QUESTIONS[:1] + [{"question": "q", "choices": ["a", "b"], "answer": 2}], "line 3: \"answer\" 2 is not an index"),
    (QUESTIONS[:1] + [{"question": "q", "choices": ["a", "b"], "answer": "c"}], "line 3: \"answer\" 'c' is neither"),
])
def test_jsonl_task_errors_name_the_line(tmp_path, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=match):
        load_icl_task(path)


def test_jsonl_line_that_does_not_parse(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n{\"question\": \"q\", \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl, line 2: not valid JSON"):
        load_icl_task(path)


def test_unknown_task_lists_the_known_ones(icl):
    model, tok = icl
    with pytest.raises(ConfigError, match=r"unknown task 'hellaswag'; known tasks: bbc-news, tweets-sentiment, or "
                                          r"the path of a \.jsonl file"):
        tk.evaluate(model, tok, "hellaswag")


def test_more_shots_than_the_pool_is_an_error(icl, qfile):
    model, tok = icl
    assert len(task_requests(load_icl_task(qfile), tok, shots=7)) == 8          # the 7 other questions
    with pytest.raises(ConfigError, match="8 shots asked, but task 'questions.jsonl' holds only 7 examples"):
        tk.evaluate(model, tok, qfile, shots=8)
    train = [ICLItem("a", ("y", "n"), 0, "train item 0"), ICLItem("b", ("y", "n"), 1, "train item 1")]
    task = ICLTask("toy", "", "{text}", train, train[:1])
    with pytest.raises(ConfigError, match="holds only 2 examples in its train split"):
        tk.evaluate(model, tok, task, shots=3)


def test_tkit_eval_jsonl_task_prints_and_writes_json(icl, icl_folder, qfile, tmp_path, capsys):
    from transformerkit.cli import main

    model, tok = icl
    folder = icl_folder
    out = tmp_path / "icl.json"
    assert main(["eval", str(folder), "--task", str(qfile), "--shots", "2", "--seed", "1", "--limit", "5",
                 "--out", str(out)]) == 0
    expected = tk.evaluate(tk.load(folder), tok, qfile, shots=2, seed=1, limit=5)
    printed = capsys.readouterr().out
    assert f"accuracy {expected['accuracy']:.4f}  acc_norm {expected['acc_norm']:.4f}  n 5  shots used 2" in printed
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == expected["accuracy"] and saved["n"] == 5 and saved["shots"] == 2
    assert saved["task"] == "questions.jsonl" and saved["model"] == str(folder)


def test_tkit_eval_says_when_shots_were_dropped(icl, icl_folder, tmp_path, capsys):
    from transformerkit.cli import main

    model, tok = icl
    folder = icl_folder
    long = [{"question": " ".join(["word"] * 60) + f" {i}?", "choices": ["yes", "no"], "answer": 0} for i in range(5)]
    path = write_jsonl(tmp_path / "long.jsonl", long)
    assert main(["eval", str(folder), "--task", str(path), "--shots", "4"]) == 0
    assert "shots were dropped, down to" in capsys.readouterr().out


def test_choice_loglikelihoods_read_the_context_once_and_equal_loglikelihood(pair):
    from transformerkit.evaluation import choice_loglikelihoods

    ours, _, tok = pair
    context = "Article: the match ended two nil after a late goal.\nTopic: "
    choices = ["sport", "business", "politics and government", "tech"]
    shared = choice_loglikelihoods(ours, tok, context, choices)
    separate = tk.loglikelihood(ours, tok, [(context, c) for c in choices])
    assert [g for _, g in shared] == [g for _, g in separate]
    assert [ll for ll, _ in shared] == pytest.approx([ll for ll, _ in separate], abs=1e-4)
    assert len({round(ll, 3) for ll, _ in shared}) == len(choices)   # the choices really score differently


def test_tkit_eval_shot_sweep_and_the_in_context_picture(icl, icl_folder, qfile, tmp_path, capsys):
    from transformerkit.cli import main
    from transformerkit.viz import read_curves

    model, tok = icl
    folder = icl_folder
    out = tmp_path / "sweep.json"
    assert main(["eval", str(folder), "--task", str(qfile), "--shots", "0", "1", "2", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["shots_requested"] for r in records] == [0, 1, 2]
    for r in records:   # each point is what tk.evaluate gives for that many shots
        assert r["accuracy"] == tk.evaluate(tk.load(folder), tok, qfile, shots=r["shots_requested"])["accuracy"]
    curves, chance = read_curves([out])
    assert list(curves) == ["questions.jsonl"] and len(curves["questions.jsonl"]) == 3
    n_choices = [len(q["choices"]) for q in QUESTIONS]
    assert chance["chance: questions.jsonl"] == pytest.approx(sum(1 / k for k in n_choices) / len(n_choices))
    picture = tmp_path / "in-context.png"
    assert main(["viz", "in-context", str(out), "--finetuned", "fine-tuned=97.31%", "--out", str(picture)]) == 0
    assert picture.stat().st_size > 10_000 and picture.with_suffix(".svg").read_text().count("fine-tuned") >= 1
    assert main(["viz", "in-context", str(out), "--finetuned", "oops", "--out", str(picture)]) == 1
    assert "LABEL=ACCURACY" in capsys.readouterr().err
