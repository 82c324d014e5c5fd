"""Real weights: the smollm2-135m-instruct asset (SmolLM2-135M-Instruct as a Q4_1 GGUF file) loaded by `tk.load`
against transformers loading the same file (`gguf_file=`): equal fp32 logits, equal greedy tokens, the parameter
count, and `tkit convert` to a Hugging Face folder that transformers loads alike. Token ids come from transformers'
tokenizer of the same file, so this checks the weights whatever our tokenizer does."""
from __future__ import annotations

import pytest
import torch

import transformerkit as tk
from transformerkit import tokenization
from transformerkit.cli import main

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow   # a label: transformers takes 15-30 s to load the file (`make test` runs these too)

ASSET, FILE = "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["The capital of France is",
           "def fibonacci(n):\n    ",
           "<|im_start|>user\nWhat is gravity? Explain in two sentences.<|im_end|>\n<|im_start|>assistant\n",
           "Once upon a time, in a small village by the sea, there lived"]


@pytest.fixture(scope="module")
def folder():
    return tk.fetch(ASSET)


@pytest.fixture(scope="module")
def theirs(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=FILE, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def ours():
    return tk.load(ASSET)


@pytest.fixture(scope="module")
def prompts(folder):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=FILE)
    return [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]


def test_loaded_as_llama(ours):
    assert type(ours).__name__ == "Llama" and not ours.training
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert sum(p.numel() for p in ours.parameters()) == 134_515_008
    c = ours.config
    assert (c.n_layer, c.d_model, c.n_head, c.kv_heads, c.d_ff, c.vocab_size, c.max_position) == \
        (30, 576, 9, 3, 1536, 49152, 8192)
    assert c.rope_theta == 1e5 and c.tie_embeddings
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 2)
    assert ours.generation_config.eos_token_id == 2   # <|im_end|>: all the file says about generating


def test_logits_match_transformers(ours, theirs, prompts):
    with torch.no_grad():
        for ids in prompts:
            mine, reference = ours(input_ids=ids).logits, theirs(input_ids=ids).logits
            assert mine.abs().max() > 1
            assert (mine - reference).abs().max() < 1e-4


def test_greedy_tokens_match_transformers(ours, theirs, prompts):
    ids = prompts[3]
    new = tk.generate(ours, ids, max_new_tokens=64)
    expected = theirs.generate(ids, max_new_tokens=64, do_sample=False)
    assert new.shape == (1, ids.shape[1] + 64)   # no early end-of-text: all 64 tokens are compared
    assert torch.equal(new, expected)


def test_tkit_convert_to_hugging_face(ours, prompts, tmp_path):
    out = tmp_path / "smollm2"
    assert main(["convert", ASSET, str(out)]) == 0
    converted = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert converted.config.tie_word_embeddings
    with torch.no_grad():
        for ids in prompts[:2]:
            assert (converted(input_ids=ids).logits - ours(input_ids=ids).logits).abs().max() < 1e-4
    if hasattr(tokenization, "gguf_tokenizer"):   # where tokenization reads GGUF files, the tokenizer is saved too
        saved = transformers.AutoTokenizer.from_pretrained(out)
        assert all(torch.equal(saved(p, return_tensors="pt").input_ids, ids) for p, ids in zip(PROMPTS, prompts))


# ----------------------------------------------------------------------------- tokenizer and chat

@pytest.fixture(scope="module")
def tok():
    return tk.load_tokenizer(ASSET)


@pytest.fixture(scope="module")
def their_tok(folder):
    return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=FILE)


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_the_model_answers_paris(ours, tok):
    reply = tk.chat(ours, tok, QUESTION, do_sample=False)
    assert "Paris" in reply, reply


def test_chat_prompt_ids_and_generated_text_tokenize_as_transformers(ours, tok, their_tok):
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert prompt == their_tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ids == their_tok(prompt, add_special_tokens=False).input_ids
    # Strings the model writes (greedy and sampled) re-encode to the same ids in both tokenizers.
    generated = [tk.generate(ours, torch.tensor([ids]), max_new_tokens=48, do_sample=sample,
                             generator=torch.Generator().manual_seed(seed))[0, len(ids):]
                 for sample, seed in ((False, 0), (True, 1), (True, 2))]
    for new in generated:
        text = tok.decode(new.tolist())
        assert text == their_tok.decode(new.tolist())
        assert tok.encode(text, add_special_tokens=False) == their_tok(text, add_special_tokens=False).input_ids


def test_tkit_chat_streams_replies_and_resets(monkeypatch, capsys):
    turns = iter(["What is the capital of France? Answer in one word.", "/reset",
                  "What is the capital of France? Answer in one word.", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(turns))
    assert main(["chat", ASSET, "--greedy", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("Paris") == 2 and "(conversation reset)" in out and "/reset" in out


def test_tkit_generate_on_the_real_model(ours, tok, capsys):
    assert main(["generate", ASSET, "--prompt", "The capital of France is", "--greedy", "--max-new-tokens", "12",
                 "--no-stream"]) == 0
    ids = torch.tensor([tok.encode("The capital of France is")])
    expected = tok.decode(tk.generate(ours, ids, max_new_tokens=12)[0, ids.shape[1]:].tolist())
    assert capsys.readouterr().out.strip() == ("The capital of France is" + expected).strip()
