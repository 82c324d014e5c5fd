"""The ptb asset and corpus: the exact standard splits, their counts, PTB's word tokenizer, the md5 refusal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from transformerkit.assets import fetch
from transformerkit.cli import main
from transformerkit.data import load_corpus, ptb_splits
from transformerkit.data import ptb as ptb_module
from transformerkit.data.parallel import load_split_data
from transformerkit.errors import DataError
from transformerkit.tokenization import load_tokenizer, ptb_word_tokenizer, word_tokenizer
from transformerkit.training.lm import _tokenizer

STANDARD_MD5 = {  # of Mikolov's ptb.{train,valid,test}.txt, written out here so an edit of PTB_MD5 fails too
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}   # words + one <eos> a line
LINES = {"train": 42_068, "valid": 3_370, "test": 3_761}


@pytest.fixture(scope="module")
def splits() -> dict[str, str]:
    return ptb_splits()   # fetches the asset once into $TRANSFORMERKIT_HOME


@pytest.fixture(scope="module")
def tokenizer():
    return ptb_word_tokenizer()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_each_split_is_the_standard_file(splits: dict[str, str], split: str) -> None:
    assert hashlib.md5(splits[split].encode("utf-8")).hexdigest() == STANDARD_MD5[split]
    assert splits[split].startswith(" ") and splits[split].endswith(" \n")   # the standard files' layout


def test_token_and_line_counts(splits: dict[str, str]) -> None:
    for split, text in splits.items():
        assert text.count("\n") == LINES[split]
        assert len(ptb_module.ptb_tokens(text)) == TOKENS[split]


def test_vocabulary_is_ten_thousand_in_the_reference_order(splits: dict[str, str]) -> None:
    vocab = ptb_module.ptb_vocabulary(splits["train"])
    assert len(vocab) == len(set(vocab)) == 10_000
    assert vocab[:3] == ["the", "<unk>", "<eos>"]   # Zaremba et al.'s reader gives the same ids


def test_tokenizer_round_trips_and_has_no_out_of_vocabulary_words(splits: dict[str, str], tokenizer) -> None:
    assert tokenizer.vocab_size == 10_000
    line = splits["valid"].splitlines(keepends=True)[0]
    ids = tokenizer.encode(line)
    assert tokenizer.decode(ids) == line
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.backend.id_to_token(ids[-1]) == "<eos>"
    vocab = tokenizer.backend.get_vocab()
    for split in ("valid", "test"):
        assert set(splits[split].split()) <= vocab.keys()
        ids = tokenizer.encode(splits[split])
        assert len(ids) == TOKENS[split]
        # Every <unk> id comes from a literal <unk> of PTB, none from an unknown word.
        assert ids.count(tokenizer.unk_token_id) == splits[split].split().count("<unk>")
    assert tokenizer.decode(tokenizer.encode(splits["valid"])) == splits["valid"]


def test_load_tokenizer_and_the_trainers_word_tokenizer_are_ptbs(splits: dict[str, str], tokenizer) -> None:
    by_name = load_tokenizer("ptb")
    assert by_name.backend.get_vocab() == tokenizer.backend.get_vocab()
    train, valid = load_corpus("ptb")
    assert (train, valid) == (splits["train"], splits["valid"])
    assert _tokenizer("word", train, valid).backend.get_vocab() == tokenizer.backend.get_vocab()


def test_word_tokenizer_of_other_text_adds_unk() -> None:
    tok = word_tokenizer(" a b a \n c \n")
    assert tok.vocab_size == 5   # a, <eos>, b, c, <unk>
    assert tok.decode(tok.encode(" a zzz \n")) == " a <unk> \n"


def test_tkit_data_show_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show", "ptb"]) == 0
    out = capsys.readouterr().out
    for number in ("929,589", "73,760", "82,430", "42,068", "3,370", "3,761", "10,000"):
        assert number in out
    assert "consumers may want to move their telephones" in out   # the sample line
    assert "outside it: 0" in out
    assert load_split_data("ptb").summary()["test"]["tokens"] == TOKENS["test"]
    assert main(["data", "list"]) == 0
    assert "ptb" in capsys.readouterr().out.split()


def _copy_with(tmp_path: Path, old: str, new: str) -> Path:
    source = (fetch("ptb") / "__init__.py").read_text(encoding="utf-8")
    assert source.count(old) >= 1
    (tmp_path / "__init__.py").write_text(source.replace(old, new, 1), encoding="utf-8")
    return tmp_path


def test_a_changed_split_is_refused_naming_it(tmp_path: Path) -> None:
    folder = _copy_with(tmp_path, " consumers may want", " consumers might want")   # the valid split's first line
    with pytest.raises(DataError, match=r"PTB split 'valid': md5 .* differs from the standard ptb\.valid\.txt"):
        ptb_splits(folder)


def test_a_changed_expected_checksum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    ptb_module._checked_splits.cache_clear()   # else the cached, already checked splits come back
    monkeypatch.setitem(ptb_module.PTB_MD5, "test", "0" * 32)
    try:
        with pytest.raises(DataError, match="PTB split 'test'.*0{32}"):
            ptb_splits()
    finally:
        ptb_module._checked_splits.cache_clear()


def test_a_missing_literal_is_refused(tmp_path: Path) -> None:
    folder = _copy_with(tmp_path, "penn['test']", "penn['tests']")
    with pytest.raises(DataError, match=r"no string literal for the split\(s\) \['test'\]"):
        ptb_splits(folder)


def test_tkit_train_on_ptb_with_the_word_tokenizer_then_eval(tmp_path: Path, capsys) -> None:
    """`tkit train --data ptb --tokenizer word` trains on PTB's 10k words and `tkit eval` scores its valid split."""
    run = tmp_path / "ptb"
    assert main(["train", "--model", "gpt2-tiny", "--data", "ptb", "--tokenizer", "word", "--set", "max_position=33",
                 "--block-size", "32", "--batch-size", "4", "--max-steps", "3", "--eval-interval", "3",
                 "--eval-batches", "1", "--out", str(run)]) == 0
    assert load_tokenizer(run / "checkpoint").vocab_size == 10_000
    capsys.readouterr()
    assert main(["eval", str(run), "--task", "perplexity", "--data", "ptb", "--split", "valid",
                 "--max-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "73,760 tokens" in out   # words + one <eos> a line: the standard count of PTB's valid split
    perplexity = float(out.split("perplexity ")[1].split()[0])
    assert 1_000 < perplexity < 20_000   # 3 steps from random weights: near the 10,000-word uniform guess
