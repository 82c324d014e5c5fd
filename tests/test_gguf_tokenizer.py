"""The tokenizer and chat template a GGUF file carries, against transformers' own GGUF tokenizer.

The real file is the smollm2-135m-instruct asset (byte-level BPE, pre-tokenizer "smollm", 17 control
tokens, a ChatML template). Llama 3's pre-tokenizer ("llama-bpe") and the error cases use small GGUFs
written here with gguf.GGUFWriter: metadata and one tiny tensor.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import pre_tokenizers

import transformerkit as tk
from transformerkit.errors import ConfigError, DataError, TransformerKitError
from transformerkit.interop.gguf import open_gguf, read_metadata
from transformerkit.tokenization import GGUF_PRE_TOKENIZERS, Tokenizer, gguf_tokenizer

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

ASSET = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It wasn't the dog's fault; they'd all been running.",
    "def mean(xs):\n    total = 0\n    for x in xs:\n\tif x:\n\t\ttotal += x  # tabs and spaces\n"
    "    return total / len(xs)\n",
    "class A:\n        pass\n\n\n\nif __name__ == '__main__':\r\n    A()\r\n",
    "Numbers: 0 1 12 123 1234 12345678901234567890, 3.14159, -42, 1e-5, 2024-06-30, $1,000,000.00, 50%",
    "a   1  22   333    4444\n 5\t6\n\n7",
    "Café, naïve, façade, Ångström, São Paulo, Straße, Łódź, ελληνικά, русский, עברית, العربية",
    "日本語のテキストと中文文本和한국어 텍스트。",
    "Emoji 😀🎉🚀 and families 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tones 👍🏽, keycap 1️⃣",
    "multiple     spaces   and\n\n\nnewlines\n \n  \n\t\n",
    "   leading and trailing spaces   ",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>glued<|endoftext|><repo_name>x<file_sep>y<|im_start|><|im_start|>",
    "<|im_start  not a token <|im_end| |im_end|>",
    "I'M SHOUTING, you're whispering, THEY'LL see, we'VE done it, it'S fine",
    "Mixed\u00a0no-break\u2009thin\u3000ideographic spaces, zero\u200bwidth, and a control \x07 char.",
    "x" * 500 + " " + "ab" * 300,
    "",
    " ",
    "\n",
]


def _write_gguf(path: Path, metadata: dict) -> Path:
    """A GGUF holding only ``metadata`` (tokenizer keys by their GGUF names) and one 4-float tensor."""
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in metadata.items():
        if key == "tokenizer.ggml.tokens":
            writer.add_token_list(value)
        elif key == "tokenizer.ggml.token_type":
            writer.add_token_types(value)
        elif key == "tokenizer.ggml.merges":
            writer.add_token_merges(value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    writer.add_tensor("x", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def folder() -> Path:
    return tk.fetch(ASSET)


@pytest.fixture(scope="module")
def metadata(folder: Path) -> dict:
    return read_metadata(open_gguf(folder / GGUF_FILE))


@pytest.fixture(scope="module")
def ours(folder: Path, metadata: dict) -> Tokenizer:
    return gguf_tokenizer(folder / GGUF_FILE, metadata)


@pytest.fixture(scope="module")
def theirs(folder: Path):
    """transformers' tokenizer of the same GGUF, loaded once for the module (it takes seconds)."""
    return transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)


@pytest.fixture(scope="module")
def corpus(theirs) -> list[str]:
    """CORPUS plus text decoded from random token ids (specials included) and a real source file."""
    rng = random.Random(0)
    randoms = [theirs.decode([rng.randrange(len(theirs)) for _ in range(rng.randrange(1, 40))]) for _ in range(300)]
    source = Path(tk.__file__).with_name("tokenization.py").read_text(encoding="utf-8")
    return [*CORPUS, *randoms, source]


def test_load_tokenizer_by_asset_name(ours: Tokenizer) -> None:
    by_name = tk.load_tokenizer(ASSET)   # the asset's folder holds one .gguf and no vocabulary files
    for tok in (by_name, ours):
        assert tok.vocab_size == 49152
        assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
            "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 2, 0)
        assert tok.chat_template is not None and "<|im_start|>" in tok.chat_template
    text = "Hello <|im_start|>user 123"
    assert by_name.encode(text) == ours.encode(text)
    assert ours.special_ids == set(range(17))   # the 17 control tokens
    assert ours.encode("<|im_start|>") == [1]   # one token, not pieces
    assert ours.encode("Hi")[0] != ours.bos_token_id   # add_bos_token is False in the file


def test_ids_equal_transformers_gguf_tokenizer(ours: Tokenizer, theirs, corpus: list[str]) -> None:
    mismatches = [(text, ours.encode(text), theirs(text).input_ids)
                  for text in corpus if ours.encode(text) != theirs(text).input_ids]
    assert not mismatches, mismatches[:3]
    assert sum(len(ours.encode(text)) for text in corpus) > 10_000   # a real amount of text was compared
    assert ours.encode_batch(corpus[:20]) == [theirs(text).input_ids for text in corpus[:20]]


def test_decode_round_trips_and_equals_transformers(ours: Tokenizer, theirs, corpus: list[str]) -> None:
    for text in corpus:
        ids = ours.encode(text)
        assert ours.decode(ids) == text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    rng = random.Random(1)
    for _ in range(200):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 50))]
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Where is the gold?"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And 3+3? Answer in 日本語 😀"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaced\n\nlines  "},
     {"role": "assistant", "content": "<|im_end|> inside"}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_template_text_equals_transformers(ours: Tokenizer, theirs, index: int,
                                                add_generation_prompt: bool) -> None:
    messages = CONVERSATIONS[index]
    text = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert text.endswith("<|im_start|>assistant\n") == add_generation_prompt
    assert ours.encode(text, add_special_tokens=False) == theirs(text, add_special_tokens=False).input_ids


# Uses what real templates use: namespace, loop controls, tojson with options, raise_exception,
# strftime_now, special-token variables, custom keywords, generation blocks, whitespace control.
RICH_TEMPLATE = """{{ bos_token }}{% set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{% continue %}{% endif %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('Unknown role: ' + message['role']) }}
    {% endif %}
    {% set ns.n = ns.n + 1 %}
    <{{ message.role }}>{{ message.content | trim }}</{{ message.role }}>
    {%- if message.meta is defined %} {{ message.meta | tojson(indent=2, sort_keys=True) }}{% endif %}
    {% if ns.n > 3 %}{% break %}{% endif %}
{% endfor %}
{% if tools %}{{ tools | tojson }}{% endif %}
{% generation %}[{{ ns.n }} {{ eos_token }} {{ pad_token }} {{ unk_token }}]{% endgeneration %}
{%- if add_generation_prompt %}<assistant>{{ greeting | default('') }}{% endif %}
{{ strftime_now('%Y') }}"""


def test_rich_template_features_equal_transformers(ours: Tokenizer, theirs) -> None:
    messages = [{"role": "system", "content": " Be brief. "},
                {"role": "user", "content": "<b>é & ü</b>", "meta": {"z": [1, 2], "a": "ß<>&'"}},
                {"role": "tool", "content": "skipped"},
                {"role": "assistant", "content": "ok", "tool_calls": None},
                {"role": "user", "content": "more"}, {"role": "assistant", "content": "cut by break"}]
    ours_rich = Tokenizer(ours.backend, bos_token=ours.bos_token, eos_token=ours.eos_token, pad_token=ours.pad_token,
                          unk_token=ours.unk_token, chat_template=RICH_TEMPLATE)
    original = theirs.chat_template
    try:
        theirs.chat_template = RICH_TEMPLATE
        for kwargs in ({}, {"add_generation_prompt": True, "greeting": "Ahoy", "tools": [{"name": "f"}]},
                       {"eos_token": "OVERRIDDEN"}):
            expected = theirs.apply_chat_template(messages, tokenize=False, **kwargs)
            assert ours_rich.apply_chat_template(messages, **kwargs) == expected
        assert '"a": "ß<>&\'"' in expected and "cut by break" not in expected and "OVERRIDDEN" in expected
        with pytest.raises(DataError, match="Unknown role: robot"):
            ours_rich.apply_chat_template([{"role": "robot", "content": "beep"}])
    finally:
        theirs.chat_template = original


@pytest.mark.parametrize("messages", [
    "Hi",
    {"role": "user", "content": "Hi"},
    [],
    ["Hi"],
    [{"content": "no role"}],
    [{"role": "user"}],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": "ok"}, None],
])
def test_bad_messages_are_refused(ours: Tokenizer, messages) -> None:
    with pytest.raises(DataError, match="role"):
        ours.apply_chat_template(messages)


def test_save_keeps_the_tokenizer_and_template_for_transformers_and_us(ours: Tokenizer, theirs, corpus: list[str],
                                                                       tmp_path: Path) -> None:
    ours.save(tmp_path)
    reloaded = Tokenizer.from_directory(tmp_path)
    assert reloaded.chat_template == ours.chat_template
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token, reloaded.unk_token) == (
        ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token)
    saved_theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert saved_theirs.chat_template == ours.chat_template
    for text in corpus[:60]:
        expected = theirs(text).input_ids
        assert reloaded.encode(text) == expected
        assert saved_theirs(text).input_ids == expected
    messages = CONVERSATIONS[2]
    assert reloaded.apply_chat_template(messages, add_generation_prompt=True) == saved_theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    # And the other way: a folder transformers saved (its template in chat_template.jinja) loads here.
    theirs.save_pretrained(str(tmp_path / "theirs"))
    from_theirs = tk.load_tokenizer(tmp_path / "theirs")
    assert from_theirs.chat_template == ours.chat_template and from_theirs.eos_token == "<|im_end|>"
    assert from_theirs.encode(corpus[10]) == ours.encode(corpus[10])


@pytest.fixture(scope="module")
def llama3_gguf(metadata: dict, tmp_path_factory) -> Path:
    """SmolLM2's vocabulary under Llama 3's pre-tokenizer, with add_bos_token and no chat template."""
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")
    return _write_gguf(tmp_path_factory.mktemp("llama3") / "llama3.gguf", {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", **{k: metadata[k] for k in keys},
        "tokenizer.ggml.add_bos_token": True})


@pytest.fixture(scope="module")
def llama3(llama3_gguf: Path) -> Tokenizer:
    return tk.load_tokenizer(llama3_gguf)   # a .gguf path


def test_llama_bpe_pre_tokenizer_and_add_bos_equal_transformers(llama3: Tokenizer, llama3_gguf: Path,
                                                                ours: Tokenizer, corpus: list[str]) -> None:
    theirs = transformers.AutoTokenizer.from_pretrained(str(llama3_gguf.parent), gguf_file=llama3_gguf.name)
    for text in corpus:
        assert llama3.encode(text) == theirs(text).input_ids
        assert llama3.encode(text, add_special_tokens=False) == theirs(text, add_special_tokens=False).input_ids
    assert llama3.encode("Hi")[0] == llama3.bos_token_id == 1   # add_bos_token honoured
    # Llama 3's regex cuts numbers into pieces of at most three digits and keeps line breaks with the
    # punctuation before them; GPT-2's (smollm's, in transformers) keeps " 12345" one word.
    def words(tok: Tokenizer, text: str) -> list[str]:
        return [piece for piece, _ in tok.backend.pre_tokenizer.pre_tokenize_str(text)]
    assert words(llama3, "x 12345") == ["x", "Ġ", "123", "45"] and words(ours, "x 12345") == ["x", "Ġ12345"]
    assert llama3.encode("world!!\n\n  x", add_special_tokens=False) != ours.encode("world!!\n\n  x")
    assert llama3.decode(llama3.encode("a   1  22")) == "<|im_start|>a   1  22"


def test_no_chat_template_is_a_clear_error(llama3: Tokenizer) -> None:
    assert llama3.chat_template is None
    with pytest.raises(ConfigError, match="no chat template"):
        llama3.apply_chat_template([{"role": "user", "content": "Hi"}])


TINY = {"tokenizer.ggml.tokens": ["a", "b", "ab"], "tokenizer.ggml.token_type": [1, 1, 1],
        "tokenizer.ggml.merges": ["a b"]}


@pytest.mark.parametrize(("changes", "named"), [
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default"}, "'llama'"),
    ({"tokenizer.ggml.model": "bert", "tokenizer.ggml.pre": "smollm"}, "'bert'"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}, "'qwen2'"),
])
def test_unsupported_tokenizer_model_or_pre_is_a_clear_error(tmp_path: Path, changes: dict, named: str) -> None:
    path = _write_gguf(tmp_path / "tiny.gguf", {**changes, **TINY})
    with pytest.raises(DataError, match=named) as raised:
        tk.load_tokenizer(path)
    message = str(raised.value)
    assert str(path) in message
    if named == "'qwen2'":
        assert all(repr(pre) in message for pre in GGUF_PRE_TOKENIZERS)   # lists the supported ones
    else:
        assert "'gpt2'" in message


def test_tiny_gguf_tokenizer_and_a_folder_of_two_ggufs(tmp_path: Path) -> None:
    tiny = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", **TINY,
            "tokenizer.chat_template": "{% for m in messages %}[{{ m.content }}]{% endfor %}"}
    path = _write_gguf(tmp_path / "one.gguf", tiny)
    tok = tk.load_tokenizer(tmp_path)   # a folder with one .gguf and no vocabulary files
    assert tok.encode("abba") == [2, 1, 0] and tok.decode([2, 1, 0]) == "abba"
    assert tok.bos_token is None and tok.apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"
    _write_gguf(tmp_path / "two.gguf", tiny)
    with pytest.raises(DataError, match="2 GGUF files"):
        tk.load_tokenizer(tmp_path)
    assert tk.load_tokenizer(path).encode("ab") == [2]


def test_token_types_and_spellings_as_transformers(tmp_path: Path) -> None:
    """A token spelled outside the byte alphabet is respelled, a control token so spelled is not made
    special, a user-defined token is matched whole but not special, as in transformers."""
    symbols = pre_tokenizers.ByteLevel.alphabet()
    tokens = ["<|endoftext|>", *sorted(symbols), "  ", "<think>", "<｜end｜>", "<ctl>"]
    types = [3, *[1] * len(symbols), 1, 4, 3, 3]
    path = _write_gguf(tmp_path / "types.gguf", {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": ["Ġ Ġ"], "tokenizer.ggml.eos_token_id": 0})
    ours = tk.load_tokenizer(path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    spaces, think, end, ctl = (tokens.index(t) for t in ("  ", "<think>", "<｜end｜>", "<ctl>"))
    text = "a   b <think>x</think> <ctl><｜end｜> €<|endoftext|>"
    ids = ours.encode(text)
    assert ids == theirs(text).input_ids
    assert spaces in ids and think in ids and ctl in ids and end not in ids and ids[-1] == 0
    assert ours.special_ids == {0, ctl}
    assert ours.decode(ids) == text
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_a_missing_or_broken_gguf_is_a_project_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00")
    for path in (broken, tmp_path / "absent.gguf"):
        with pytest.raises(TransformerKitError):
            gguf_tokenizer(path)
