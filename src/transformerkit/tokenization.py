"""Tokenizers: the real GPT-2 byte-level BPE, character level, and newly trained BPEs.

The algorithms are the ``tokenizers`` library's (Rust, fast, reads the standard
vocabulary files); this module only builds them, remembers which tokens are
special, and saves them in the Hugging Face layout so ``transformers`` reads
the same folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers

from transformerkit.assets import fetch
from transformerkit.data.text import read_text
from transformerkit.errors import ConfigError, DataError

ENDOFTEXT = "<|endoftext|>"
UNK = "[UNK]"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")

# Used when a folder does not say which tokens are special (no tokenizer_config.json).
_CONVENTIONAL_SPECIAL_TOKENS = {
    "bos_token": (ENDOFTEXT, "<s>"),
    "eos_token": (ENDOFTEXT, "</s>"),
    "pad_token": ("<pad>", "[PAD]"),
    "unk_token": ("<unk>", UNK),
}


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the names of its special tokens.

    ``backend`` is the wrapped ``tokenizers.Tokenizer`` for anything not exposed here.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token, self.eos_token = bos_token, eos_token
        self.pad_token, self.unk_token = pad_token, unk_token
        for key in SPECIAL_TOKEN_KEYS:
            token = getattr(self, key)
            if token is not None and backend.token_to_id(token) is None:
                raise ConfigError(
                    f"The {key} {token!r} is not in the tokenizer's vocabulary. "
                    "Pass a token that the vocabulary has, or None."
                )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` applies the post-processor (e.g. BERT's [CLS] ... [SEP])."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text, encoded in parallel."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (a list, 1-D tensor or array).

        Special tokens are kept by default, so ``decode(encode(s)) == s`` for every string.
        """
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (the embedding table needs this many rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json and tokenizer_config.json (and, for a BPE, vocab.json + merges.txt).

        The layout is Hugging Face's, so ``transformers`` loads the folder too
        (``GPT2TokenizerFast.from_pretrained(directory)`` for a byte-level BPE).
        Each file is written to a temporary name and renamed into place.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / "tokenizer.json", self.backend.to_str(pretty=True))
        config = {key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS if getattr(self, key) is not None}
        config["tokenizer_class"] = "GPT2Tokenizer" if self._is_byte_level_bpe() else "PreTrainedTokenizerFast"
        _atomic_write(directory / "tokenizer_config.json", json.dumps(config, indent=2))
        if isinstance(self.backend.model, models.BPE):
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                for written in self.backend.model.save(tmp):
                    os.replace(written, directory / Path(written).name)
        return directory

    def _is_byte_level_bpe(self) -> bool:
        return isinstance(self.backend.model, models.BPE) and isinstance(
            self.backend.pre_tokenizer, pre_tokenizers.ByteLevel
        )

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load a folder holding tokenizer.json, or vocab.json + merges.txt, or encoder.json + vocab.bpe.

        The special tokens come from tokenizer_config.json / special_tokens_map.json
        when present, else from the conventional names the vocabulary has
        (``<|endoftext|>``, ``<s>``, ``</s>``, ``<pad>``, ``[PAD]``, ``<unk>``, ``[UNK]``).
        """
        directory = Path(directory)
        if (directory / "tokenizer.json").is_file():
            path = directory / "tokenizer.json"
            try:
                backend = tokenizers.Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception
                raise DataError(f"Cannot read {path}: {e}. Is it a `tokenizers` tokenizer.json?") from e
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            backend = _byte_level_bpe(directory / "vocab.json", directory / "merges.txt")
        elif (directory / "encoder.json").is_file() and (directory / "vocab.bpe").is_file():
            backend = _byte_level_bpe(directory / "encoder.json", directory / "vocab.bpe")
        else:
            raise DataError(
                f"No tokenizer files in {directory}: expected tokenizer.json, or vocab.json + merges.txt, "
                "or encoder.json + vocab.bpe. Save one there with Tokenizer.save(), or point at another folder."
            )
        return cls(backend, **_special_tokens(directory, backend))

    def __repr__(self) -> str:
        model = type(self.backend.model).__name__
        return f"Tokenizer({model}, vocab_size={self.vocab_size}, eos_token={self.eos_token!r})"


def gpt2_tokenizer(folder: str | os.PathLike | None = None) -> Tokenizer:
    """The real GPT-2 tokenizer from encoder.json + vocab.bpe (default: the ``gpt2-vocab`` asset).

    Byte-level BPE without a prefix space, 50,257 tokens, ``<|endoftext|>`` (50256)
    as both bos and eos, no pad token, as GPT-2 was trained.
    """
    folder = Path(folder) if folder is not None else fetch("gpt2-vocab")
    vocab, merges = folder / "encoder.json", folder / "vocab.bpe"
    for path in (vocab, merges):
        if not path.is_file():
            raise DataError(
                f"{path} is missing: a GPT-2 vocabulary folder holds encoder.json and vocab.bpe. "
                "Call gpt2_tokenizer() without a folder to use the gpt2-vocab asset."
            )
    backend = _byte_level_bpe(vocab, merges)
    return Tokenizer(backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT)


def char_tokenizer(text: str) -> Tokenizer:
    """A character-level tokenizer whose vocabulary is the characters of ``text``.

    Id 0 is ``[UNK]``, which every character not in ``text`` becomes; the others
    follow in code-point order, so the same corpus always gives the same ids.
    """
    if not text:
        raise DataError("Cannot build a character tokenizer from an empty text; pass the training corpus.")
    vocab = {UNK: 0} | {ch: i for i, ch in enumerate(sorted(set(text)), start=1)}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    backend.decoder = decoders.Fuse()  # join pieces without spaces
    return Tokenizer(backend, unk_token=UNK)


def train_bpe(
    files_or_texts: Iterable[str | os.PathLike],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
) -> Tokenizer:
    """Train a new byte-level BPE (GPT-2 style) of at most ``vocab_size`` tokens.

    Items that are ``Path``-like are read as UTF-8 files; plain ``str`` items are
    the training text itself. The vocabulary holds the 256 byte symbols, the
    special tokens, then merges until ``vocab_size`` (fewer if the text runs out
    of pairs seen ``min_frequency`` times). The first special token is bos and eos.
    """
    smallest = len(pre_tokenizers.ByteLevel.alphabet()) + len(special_tokens)
    if vocab_size < smallest:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least {smallest} "
            f"(256 byte symbols + {len(special_tokens)} special tokens). Ask for a larger vocab_size."
        )
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True) for t in special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_texts(files_or_texts), trainer=trainer)
    boundary = special_tokens[0] if special_tokens else None
    return Tokenizer(backend, bos_token=boundary, eos_token=boundary)


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """A tokenizer by name or location.

    Accepts ``gpt2`` / ``gpt2-vocab`` (the GPT-2 BPE asset), ``char:PATH`` (a
    character tokenizer of that text file), a folder that ``Tokenizer.from_directory``
    reads (tokenizer.json, e.g. GPT-1's or BERT's; vocab.json + merges.txt;
    encoder.json + vocab.bpe), or a tokenizer.json file.
    """
    spec = os.fspath(name_or_path)
    if spec in ("gpt2", "gpt2-vocab"):
        return gpt2_tokenizer()
    if spec.startswith("char:"):
        return char_tokenizer(read_text(spec.removeprefix("char:")))
    path = Path(spec)
    if path.is_dir():
        return Tokenizer.from_directory(path)
    if path.is_file() and path.name == "tokenizer.json":
        return Tokenizer.from_directory(path.parent)
    raise ConfigError(
        f"Cannot load a tokenizer from {spec!r}: it is not a known name nor an existing folder. "
        "Use 'gpt2' (or 'gpt2-vocab'), 'char:PATH/TO/TEXT.txt', a folder holding tokenizer.json "
        "(or vocab.json + merges.txt, or encoder.json + vocab.bpe), or a tokenizer.json file."
    )


def _byte_level_bpe(vocab_file: Path, merges_file: Path) -> tokenizers.Tokenizer:
    """GPT-2's pipeline around a vocabulary + merges pair: bytes to symbols, GPT-2's regex, BPE."""
    try:
        model = models.BPE.from_file(str(vocab_file), str(merges_file))
    except Exception as e:  # tokenizers raises a bare Exception
        raise DataError(
            f"Cannot read the BPE files {vocab_file} and {merges_file}: {e}. "
            "They should be a JSON token->id map and a merges list (one 'a b' pair per line)."
        ) from e
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if backend.token_to_id(ENDOFTEXT) is not None:
        backend.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    return backend


def _special_tokens(directory: Path, backend: tokenizers.Tokenizer) -> dict[str, str | None]:
    """Which tokens are special: the folder's Hugging Face config files, else conventional names."""
    declared: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later file wins
        path = directory / name
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"Cannot read {path}: {e}. Fix or delete the file.") from e
            for key in SPECIAL_TOKEN_KEYS:
                if key in config:
                    value = config[key]
                    declared[key] = value.get("content") if isinstance(value, dict) else value
    found = {}
    for key in SPECIAL_TOKEN_KEYS:
        token = declared.get(key)
        if key not in declared:
            token = next((t for t in _CONVENTIONAL_SPECIAL_TOKENS[key] if backend.token_to_id(t) is not None), None)
        found[key] = token if token is not None and backend.token_to_id(token) is not None else None
    return found


def _texts(files_or_texts: Iterable[str | os.PathLike]) -> Iterator[str]:
    for item in files_or_texts:
        yield item if isinstance(item, str) else read_text(item)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a saved tokenizer is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
