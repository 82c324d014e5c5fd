"""tk.chat and Conversation on a tiny random LLaMA with the real SmolLM2 tokenizer and chat template: the
prompt is the template's text, the reply stops at the end-of-turn token without special tokens, streaming
prints the reply, the history grows and resets, and bad input is refused. The real model's answers are in
test_smollm2.py."""
from __future__ import annotations

import io

import pytest
import torch

import transformerkit as tk
from random_weights import randomize_
from transformerkit.chat import Conversation, chat_prompt, plain_prompt
from transformerkit.cli import main
from transformerkit.errors import ConfigError, DataError, GenerationError

pytest.importorskip("gguf")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tok():
    return tk.load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def model():
    # SmolLM2's vocabulary, random weights drawn wide enough that greedy decoding varies its tokens
    return randomize_(tk.build("llama-tiny"), std=0.5).eval()


def greedy_tokens(model, tok, messages, n=12):
    ids = tok.encode(chat_prompt(tok, messages), add_special_tokens=False)
    out = tk.generate(model, torch.tensor([ids]), max_new_tokens=n, eos_token_id=None)
    return out[0, len(ids):].tolist()


def test_the_prompt_is_the_chat_template_text(tok):
    prompt = chat_prompt(tok, QUESTION)
    assert prompt == tok.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_the_reply_stops_at_the_end_of_turn_token(model, tok):
    new = greedy_tokens(model, tok, QUESTION)
    end = next(i for i, t in enumerate(new) if i >= 3 and t not in new[:i])   # a token first produced at step >= 3
    reply = tk.chat(model, tok, QUESTION, do_sample=False, eos_token_id=new[end])
    assert reply == tok.decode(new[:end], skip_special_tokens=True).strip()
    full = tk.chat(model, tok, QUESTION, do_sample=False, max_new_tokens=12, eos_token_id=None)
    assert full == tok.decode(new, skip_special_tokens=True).strip() and len(full) > len(reply)


def test_streaming_prints_the_reply(model, tok):
    out = io.StringIO()
    reply = tk.chat(model, tok, QUESTION, do_sample=False, max_new_tokens=10, stream=True, file=out)
    assert out.getvalue().strip() == reply and reply


def test_sampling_settings_and_seed(model, tok):
    a = tk.chat(model, tok, QUESTION, do_sample=True, temperature=1.5, max_new_tokens=10, seed=1)
    b = tk.chat(model, tok, QUESTION, do_sample=True, temperature=1.5, max_new_tokens=10, seed=1)
    c = tk.chat(model, tok, QUESTION, do_sample=True, temperature=1.5, max_new_tokens=10, seed=2)
    assert a == b and a != c


def test_conversation_keeps_the_turns_and_resets_to_the_system_prompt(model, tok):
    conversation = Conversation(system="Be brief.")
    first = conversation.ask(model, tok, "Hi", do_sample=False, max_new_tokens=5)
    conversation.ask(model, tok, "And then?", do_sample=False, max_new_tokens=5)
    roles = [m["role"] for m in conversation.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert conversation.messages[2]["content"] == first
    conversation.reset()
    assert conversation.messages == [{"role": "system", "content": "Be brief."}]


def test_a_turn_beyond_the_context_is_refused_and_the_history_kept(tok):
    small = tk.build("llama-tiny", max_position=64).eval()
    conversation = Conversation()
    conversation.ask(small, tok, "Hi", do_sample=False, max_new_tokens=4)
    before = list(conversation.messages)
    with pytest.raises(GenerationError, match="context of 64"):
        conversation.ask(small, tok, "word " * 60, do_sample=False, max_new_tokens=4)
    assert conversation.messages == before


def test_without_a_template_the_conversation_is_a_transcript(model, tok):
    messages = [{"role": "system", "content": "S"}, *QUESTION]
    assert plain_prompt(messages) == "system: S\nuser: What is the capital of France?\nassistant:"
    reply = tk.chat(model, tok, messages, template=False, do_sample=False, max_new_tokens=8)
    assert "\nuser:" not in reply


def test_errors(model, tok):
    plain = tk.load_tokenizer("gpt2-vocab")
    assert plain.chat_template is None
    with pytest.raises(ConfigError, match="no chat template.*template=False"):
        tk.chat(model, plain, QUESTION)
    with pytest.raises(DataError, match="messages"):
        tk.chat(model, tok, "What is the capital of France?")
    with pytest.raises(DataError, match="messages"):
        tk.chat(model, tok, [], template=False)
    with pytest.raises(GenerationError, match="decoder-only"):
        tk.chat(tk.build("bert-tiny"), tok, QUESTION)


def test_tkit_chat_without_a_template_says_so_before_loading_the_model(tmp_path, capsys):
    """A GGUF whose tokenizer has no chat template: tkit chat stops at once and offers --no-template."""
    from test_gguf_tokenizer import TINY, _write_gguf  # a GGUF with a tokenizer and no weights

    path = _write_gguf(tmp_path / "base.gguf", {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", **TINY})
    assert main(["chat", str(path)]) == 1
    err = capsys.readouterr().err
    assert "has no chat template" in err and "--no-template" in err
