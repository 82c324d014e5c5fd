"""Tokenizers: the real GPT-2 byte-level BPE, BERT's WordPiece, character level, word level (PTB's),
trained BPE / WordPiece, and the byte-level BPE a GGUF file describes (with its chat template).

The algorithms are the ``tokenizers`` library's (Rust, fast, reads the standard
vocabulary files); this module only builds them, remembers which tokens are
special (and a chat model's chat template), and saves them in the Hugging Face
layout so ``transformers`` reads the same folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import tokenizers
import torch
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from transformerkit.assets import CATALOG, fetch
from transformerkit.data.text import read_text
from transformerkit.errors import ConfigError, DataError
from transformerkit.files import atomic_files

ENDOFTEXT = "<|endoftext|>"
UNK = "[UNK]"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "cls_token", "sep_token", "mask_token")

# Used when a folder does not say which tokens are special (no tokenizer_config.json).
_CONVENTIONAL_SPECIAL_TOKENS = {
    "bos_token": (ENDOFTEXT, "<s>"),
    "eos_token": (ENDOFTEXT, "</s>"),
    "pad_token": ("<pad>", "[PAD]"),
    "unk_token": ("<unk>", UNK),
    "cls_token": ("[CLS]", "<s>"),
    "sep_token": ("[SEP]", "</s>"),
    "mask_token": ("[MASK]", "<mask>"),
}

# BERT's special tokens, in the order a newly trained vocabulary gives them ids 0..4.
BERT_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": UNK,
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
WORDPIECE_PREFIX = "##"  # marks a piece that continues a word: "playing" -> "play", "##ing"
_VOCAB_TXT_LAYOUT = (
    "A WordPiece vocab.txt (BERT's) is UTF-8 text with one token per line, its line number (from 0) being "
    "its id: [PAD], [unused0], ..., [UNK], [CLS], [SEP], [MASK], then words such as 'the' and "
    "continuations such as '##ing', each once."
)

Padding = Literal["longest", "max_length", "do_not_pad"]
PADDING_MODES: tuple[Padding, ...] = ("longest", "max_length", "do_not_pad")


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
        cls_token: str | None = None,
        sep_token: str | None = None,
        mask_token: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        if chat_template is not None and not isinstance(chat_template, str):
            raise ConfigError(f"chat_template must be a Jinja2 template string or None, not a "
                              f"{type(chat_template).__name__}.")
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token
        self.pad_token, self.unk_token = pad_token, unk_token
        self.cls_token, self.sep_token, self.mask_token = cls_token, sep_token, mask_token
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

    def batch_encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        text_pairs: Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        max_length: int | None = None,
        truncation: bool = True,
        padding: Padding = "longest",
        is_split_into_words: bool = False,
        return_word_ids: bool = False,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        """Model inputs for a batch: ``input_ids``, ``token_type_ids``, ``attention_mask`` as (B, L) LongTensors.

        Each example gets the special tokens (BERT: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``,
        type ids 0 for A and 1 for B) and is right-padded with the pad token: to the longest
        example (``padding="longest"``) or to ``max_length`` (``"max_length"``); ``"do_not_pad"``
        returns lists of unequal length instead of tensors.

        ``max_length`` counts the special tokens; None means no limit. With ``truncation`` a
        longer example is cut at the end, and a pair loses tokens from the longer of A and B
        first ("longest_first", as ``transformers``' default tokenizers do it: when both must
        be cut to an odd budget, the one that was longer, B on a tie, keeps the extra token;
        the legacy pure-Python ``BertTokenizerLegacy`` always gives it to A). Without
        ``truncation`` a longer example is an error.

        With ``is_split_into_words`` each text is a list of words (e.g. NER tokens), and
        ``return_word_ids`` adds ``word_ids``: per example, the index of the word each
        token comes from (None for special and pad tokens), to align word labels to sub-words.
        For a pair, B's words are counted from 0 again.

        An empty (or whitespace-only) text is refused: in training data it teaches nothing and is
        a mistake. ``allow_empty=True`` encodes it as the special tokens alone (BERT: ``[CLS] [SEP]``),
        as ``transformers`` does, for embedding a corpus that has blank lines; a pair's second text
        must still have tokens.

        The truncation and padding are the ``tokenizers`` backend's own, set for this
        call and then restored, so calls on one tokenizer from several threads at once
        may see each other's settings.
        """
        examples = _check_examples("texts", texts, is_split_into_words, allow_empty)
        if text_pairs is not None:
            pairs = _check_examples("text_pairs", text_pairs, is_split_into_words)
            if len(pairs) != len(examples):
                raise DataError(
                    f"text_pairs has {len(pairs)} examples but texts has {len(examples)}: "
                    "pass one pair (second segment) per text."
                )
            examples = list(zip(examples, pairs))
        self._check_batch_settings(max_length, truncation, padding, is_pair=text_pairs is not None)
        truncate_to = max_length if truncation else None
        with self._truncation_and_padding(truncate_to, padding, max_length):
            encodings = self.backend.encode_batch(examples, is_pretokenized=is_split_into_words)
        if max_length is not None and not truncation:
            _refuse_longer_than(max_length, encodings)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        batch: dict[str, Any] = (
            columns if padding == "do_not_pad"
            else {name: torch.tensor(rows, dtype=torch.long) for name, rows in columns.items()}
        )
        if return_word_ids:
            batch["word_ids"] = [e.word_ids for e in encodings]
        return batch

    def _check_batch_settings(
        self, max_length: int | None, truncation: bool, padding: str, *, is_pair: bool
    ) -> None:
        if padding not in PADDING_MODES:
            raise ConfigError(f"padding={padding!r} is not one of {', '.join(map(repr, PADDING_MODES))}.")
        if padding == "max_length" and max_length is None:
            raise ConfigError('padding="max_length" needs max_length; pass it, or use padding="longest".')
        if padding != "do_not_pad" and self.pad_token_id is None:
            raise DataError(
                f"padding={padding!r} needs a pad token, and this tokenizer ({self!r}) has none "
                "(GPT-2's, for one, has none). Pass padding='do_not_pad', or build the Tokenizer "
                "with a pad_token from its vocabulary."
            )
        if max_length is not None and truncation:
            specials = self.backend.num_special_tokens_to_add(is_pair)
            smallest = specials + (2 if is_pair else 1)
            if max_length < smallest:
                raise ConfigError(
                    f"max_length={max_length} leaves no room for text: the special tokens alone take "
                    f"{specials} per {'pair' if is_pair else 'example'}. Use max_length >= {smallest}."
                )

    @contextmanager
    def _truncation_and_padding(
        self, truncate_to: int | None, padding: Padding, max_length: int | None
    ) -> Iterator[None]:
        """Set the backend's truncation and padding for one call, then put back what it had."""
        backend = self.backend
        saved_truncation, saved_padding = backend.truncation, backend.padding
        try:
            if truncate_to is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(truncate_to, strategy="longest_first", direction="right")
            if padding == "do_not_pad":
                backend.no_padding()
            else:
                pad_to = max_length if padding == "max_length" else None
                backend.enable_padding(
                    direction="right", pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token, length=pad_to
                )
            yield
        finally:
            backend.no_truncation()
            backend.no_padding()
            if saved_truncation is not None:
                backend.enable_truncation(**saved_truncation)
            if saved_padding is not None:
                backend.enable_padding(**saved_padding)

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
                            **kwargs: Any) -> str:
        """The prompt TEXT of a conversation (a list of {"role", "content"} dicts), through ``chat_template``.

        Rendered as ``transformers``' ``apply_chat_template(..., tokenize=False)`` renders it (see
        chat_template.py). ``add_generation_prompt`` ends the text with the assistant's turn opening;
        ``kwargs`` become template variables (and override the special tokens of the same name).
        Encode the text with ``add_special_tokens=False``: the template writes the special tokens itself.
        """
        if self.chat_template is None:
            raise ConfigError(
                f"This tokenizer ({self!r}) has no chat template, so it cannot turn messages into a prompt. "
                "Load the tokenizer of an instruction-tuned model (a GGUF with tokenizer.chat_template, or a "
                "folder whose tokenizer_config.json has chat_template), or set tokenizer.chat_template."
            )
        # Imported here: jinja2 takes ~0.2 s to import, and only chat needs it.
        from transformerkit.chat_template import render_chat_template

        specials = {key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS if getattr(self, key) is not None}
        return render_chat_template(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                                    special_tokens=specials, **kwargs)

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

    @property
    def cls_token_id(self) -> int | None:
        return self._id(self.cls_token)

    @property
    def sep_token_id(self) -> int | None:
        return self._id(self.sep_token)

    @property
    def mask_token_id(self) -> int | None:
        return self._id(self.mask_token)

    @property
    def special_ids(self) -> set[int]:
        """Ids of every special token: the named ones (bos, pad, cls, ...) and the backend's added special tokens.

        Useful to leave them out of a loss or of masked-language-model masking.
        """
        named = {self._id(getattr(self, key)) for key in SPECIAL_TOKEN_KEYS}
        added = {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}
        return {i for i in named if i is not None} | added

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json, tokenizer_config.json, and vocab.json + merges.txt (BPE) or vocab.txt (WordPiece).

        The chat template, if any, goes into tokenizer_config.json as ``chat_template`` (where
        ``transformers`` reads it).

        The layout is Hugging Face's, so ``transformers`` loads the folder too
        (``GPT2TokenizerFast.from_pretrained(directory)`` for a byte-level BPE,
        ``AutoTokenizer`` / ``BertTokenizerFast`` for BERT's WordPiece).
        The files are written together (files.atomic_files): none is replaced before all are
        complete, and other files in ``directory`` (a model's weights) are kept.
        """
        directory = Path(directory)
        config = {key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS if getattr(self, key) is not None}
        config |= self._transformers_class_config()
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        with atomic_files(directory) as tmp:
            (tmp / "tokenizer.json").write_text(self.backend.to_str(pretty=True), encoding="utf-8")
            (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            if isinstance(self.backend.model, models.BPE):
                self.backend.model.save(str(tmp))             # vocab.json + merges.txt
            if isinstance(self.backend.model, models.WordPiece):
                by_id = sorted(self.backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
                (tmp / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in by_id), encoding="utf-8")
        return directory

    def _transformers_class_config(self) -> dict[str, Any]:
        """The tokenizer_config.json entries that tell ``transformers`` which class rebuilds this tokenizer."""
        backend = self.backend
        if isinstance(backend.model, models.BPE) and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
            return {"tokenizer_class": "GPT2Tokenizer"}
        normalizer = backend.normalizer
        if (
            isinstance(backend.model, models.WordPiece)
            and isinstance(normalizer, normalizers.BertNormalizer)
            and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
        ):
            return {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": normalizer.lowercase,
                "strip_accents": normalizer.strip_accents,
                "tokenize_chinese_chars": normalizer.handle_chinese_chars,
            }
        return {"tokenizer_class": "PreTrainedTokenizerFast"}

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load a folder holding tokenizer.json, or vocab.json + merges.txt, or encoder.json + vocab.bpe, or vocab.txt.

        A lone vocab.txt is BERT's WordPiece, lower-cased unless tokenizer_config.json
        says ``"do_lower_case": false``. A folder with none of these but one .gguf file
        (the smollm2-135m-instruct asset) gets that file's tokenizer (``gguf_tokenizer``).
        Truncation and padding stored in a tokenizer.json are dropped: ``encode`` gives every
        token, and ``batch_encode`` pads and truncates as each call asks (as ``transformers`` does).
        The special tokens come from tokenizer_config.json / special_tokens_map.json
        when present, else from the conventional names the vocabulary has
        (``<|endoftext|>``, ``<s>``, ``</s>``, ``<pad>``, ``[PAD]``, ``<unk>``, ``[UNK]``,
        ``[CLS]``, ``[SEP]``, ``[MASK]``, ``<mask>``). The chat template comes from
        chat_template.jinja or tokenizer_config.json's ``chat_template``, as ``transformers`` reads it.
        """
        directory = Path(directory)
        if (directory / "tokenizer.json").is_file():
            path = directory / "tokenizer.json"
            try:
                backend = tokenizers.Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception
                raise DataError(f"Cannot read {path}: {e}. Is it a `tokenizers` tokenizer.json?") from e
            backend.no_truncation()
            backend.no_padding()
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            backend = _byte_level_bpe(directory / "vocab.json", directory / "merges.txt")
        elif (directory / "encoder.json").is_file() and (directory / "vocab.bpe").is_file():
            backend = _byte_level_bpe(directory / "encoder.json", directory / "vocab.bpe")
        elif (directory / "vocab.txt").is_file():
            backend = _wordpiece_backend(directory / "vocab.txt", **_bert_options(directory))
        elif ggufs := sorted(directory.glob("*.gguf")):
            if len(ggufs) > 1:
                raise DataError(
                    f"{directory} holds {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)}) and no "
                    "tokenizer.json; pass the path of the .gguf file whose tokenizer you want."
                )
            return gguf_tokenizer(ggufs[0])
        else:
            raise DataError(
                f"No tokenizer files in {directory}: expected tokenizer.json, or vocab.json + merges.txt, "
                "or encoder.json + vocab.bpe, or vocab.txt (WordPiece), or one .gguf file. Save one there with "
                "Tokenizer.save(), or point at another folder."
            )
        return cls(backend, **_special_tokens(directory, backend), chat_template=_chat_template(directory))

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


def word_tokenizer(text: str) -> Tokenizer:
    """A word-level tokenizer whose vocabulary is the whitespace-separated words of ``text``, plus ``<eos>``.

    A line end is the token ``<eos>``; ``<unk>`` (added last if ``text`` lacks it) stands for any
    other word. Ids follow ``data.ptb.ptb_vocabulary``: most frequent first, ties alphabetical.
    Decoding puts a space before each word and ``<eos>`` back as " \\n", so a text in PTB's
    layout (``" w1 w2 \\n"`` per line) comes back exactly.
    """
    from transformerkit.data.ptb import PTB_EOS, PTB_UNK, ptb_vocabulary

    if not text.strip():
        raise DataError("Cannot build a word tokenizer from an empty text; pass the training corpus.")
    words = ptb_vocabulary(text)
    if PTB_UNK not in words:
        words.append(PTB_UNK)
    backend = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=PTB_UNK))
    # A line end becomes the word <eos> before the text is split at whitespace.
    backend.normalizer = normalizers.Replace("\n", f" {PTB_EOS} ")
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Each word is " word" and <eos> is " \n" again, joined with nothing: PTB's own layout.
    backend.decoder = decoders.Sequence([decoders.Replace(Regex("^"), " "), decoders.Replace(f" {PTB_EOS}", " \n")])
    return Tokenizer(backend, eos_token=PTB_EOS, unk_token=PTB_UNK)


def ptb_word_tokenizer(folder: str | os.PathLike | None = None) -> Tokenizer:
    """PTB's own word-level tokenizer: ``word_tokenizer`` of the train split, exactly its 10,000 tokens.

    ``<unk>`` is a word of PTB, so valid and test have no word outside the vocabulary.
    ``folder`` is what ``fetch("ptb")`` returns (the default fetches it).
    """
    from transformerkit.data.ptb import PTB_VOCAB_SIZE, ptb_splits

    tokenizer = word_tokenizer(ptb_splits(folder)["train"])
    if tokenizer.vocab_size != PTB_VOCAB_SIZE:  # the md5 check makes this impossible; a guard against edits
        raise DataError(f"The PTB word vocabulary has {tokenizer.vocab_size} tokens, not {PTB_VOCAB_SIZE}.")
    return tokenizer


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


def wordpiece_tokenizer(
    vocab_file: str | os.PathLike,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    max_input_chars_per_word: int = 100,
) -> Tokenizer:
    """BERT's WordPiece tokenizer from a vocab.txt (one token per line, the line number is its id).

    The pipeline is BERT's: clean control characters, space out Chinese characters,
    lower-case (``lowercase``) and strip accents (``strip_accents``; None follows
    ``lowercase``, as in BERT), split on whitespace and punctuation, then greedy
    longest-match WordPiece with ``##`` continuations; a word longer than
    ``max_input_chars_per_word`` characters, or with a piece the vocabulary lacks,
    becomes ``[UNK]``. ``encode`` adds ``[CLS] ... [SEP]``; a pair is
    ``[CLS] A [SEP] B [SEP]`` with type ids 0 for A and 1 for B.
    """
    backend = _wordpiece_backend(
        Path(vocab_file),
        lowercase=lowercase,
        strip_accents=strip_accents,
        max_input_chars_per_word=max_input_chars_per_word,
    )
    return Tokenizer(backend, **BERT_SPECIAL_TOKENS)


def train_wordpiece(
    files_or_texts: Iterable[str | os.PathLike],
    vocab_size: int,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a new WordPiece vocabulary (BERT style) of ``vocab_size`` tokens.

    Items that are ``Path``-like are read as UTF-8 files; plain ``str`` items are
    the training text itself. Ids 0..4 are [PAD], [UNK], [CLS], [SEP], [MASK]; then
    come every character of the corpus (alone and as a ``##`` continuation) and the
    pieces merged from pairs seen ``min_frequency`` times, up to ``vocab_size``.
    The pipeline is ``wordpiece_tokenizer``'s, so the saved folder has a vocab.txt.
    """
    specials = list(BERT_SPECIAL_TOKENS.values())
    if vocab_size <= len(specials):
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a WordPiece vocabulary: its {len(specials)} special "
            f"tokens ({', '.join(specials)}) take that much already. Ask for a larger vocab_size."
        )
    untrained = models.WordPiece(unk_token=UNK, continuing_subword_prefix=WORDPIECE_PREFIX)
    backend = _bert_pipeline(untrained, lowercase=lowercase, strip_accents=None)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in specials],
        continuing_subword_prefix=WORDPIECE_PREFIX,
        show_progress=False,
    )
    backend.train_from_iterator(_texts(files_or_texts), trainer=trainer)
    if backend.get_vocab_size() > vocab_size:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for this corpus: the special tokens and its characters "
            f"(each also as a ## continuation) already take {backend.get_vocab_size()} tokens. "
            f"Ask for vocab_size >= {backend.get_vocab_size()}, or train on cleaner text."
        )
    _add_bert_special_tokens(backend)
    return Tokenizer(backend, **BERT_SPECIAL_TOKENS)


def train_joint_tokenizer(
    pairs: Iterable[tuple[str, str]], vocab_size: int, *, min_frequency: int = 2
) -> Tokenizer:
    """Train one subword vocabulary on both sides of translation pairs, shared by encoder and decoder.

    One vocabulary for both languages lets the model tie its embeddings and copy names
    and numbers across. See `train_subword_tokenizer` for the vocabulary itself.
    """
    sides: list[str] = [side for pair in pairs for side in pair]
    if not any(side.strip() for side in sides):
        raise DataError("No text to train on: pass (source, target) pairs with words in them, e.g. data.train.")
    return train_subword_tokenizer(sides, vocab_size, min_frequency=min_frequency)


def train_subword_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, extra_special_tokens: Sequence[str] = ()
) -> Tokenizer:
    """Train a BPE vocabulary for encoder-decoders (translation, T5 and BART pretraining).

    Ids 0..3 are ``<pad>``, ``<s>``, ``</s>``, ``<unk>``, then ``extra_special_tokens`` (T5's
    sentinels ``<extra_id_i>``, BART's ``<mask>``), which are matched whole in the text;
    ``encode`` adds none of them (the objectives put ``<s>`` / ``</s>`` where they need).

    Words are cut at spaces and line breaks; the piece of a word after a space starts with ``▁``
    (SentencePiece's Metaspace), so ``decode`` puts back exactly the spaces of the text and
    none before punctuation ("tierra." stays "tierra."), unlike WordPiece. The alphabet is
    characters, not bytes: "á", "ñ", "¿" are single symbols (a byte-level BPE would spend
    two tokens on each and could emit half a character); a character never seen in
    training becomes ``<unk>``. Text is NFC-normalised, so a decomposed "á" (a + accent)
    encodes as the composed one.
    """
    specials = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    reserved = len(specials) + len(extra_special_tokens)
    if vocab_size <= reserved:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small: the {reserved} special tokens take that much already. "
            "Ask for a few thousand (8,000 suits a Bible-sized corpus)."
        )
    backend = tokenizers.Tokenizer(models.BPE(unk_token=specials["unk_token"]))
    backend.normalizer = normalizers.NFC()
    # A line break is a piece of its own (else ".\nthe" becomes one token); the word after it has no
    # space before it, so only the text's first word gets a ▁ prepended ("first"), and decoding is exact.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False)
                        for t in [*specials.values(), *extra_special_tokens]],
        show_progress=False,
    )
    texts = list(texts)
    if not any(text.strip() for text in texts):
        raise DataError("No text to train a tokenizer on; give a corpus with words in it.")
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, **specials)


# --- GGUF -------------------------------------------------------------------------------------------
# A GGUF file (llama.cpp's format) carries its tokenizer as metadata, not as tokenizer.json. We build
# what transformers builds from it (integrations/gguf/gguf_tokenizer_mapping.py), the reference the
# tests compare with; where llama.cpp tokenizes differently, the comments say so.

GGUF_TOKENIZER_MODELS = ("gpt2",)   # tokenizer.ggml.model; "gpt2" is byte-level BPE (tokens + merges)
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4   # tokenizer.ggml.token_type (1 normal, 2 unknown, 5 unused, 6 byte)
_GGUF_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                     "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}

# Llama 3's word-splitting regex (llama.cpp's LLAMA3 pre-type, transformers' _LLAMA3_SPLIT): at most
# 3 digits a piece, a word takes one leading non-letter, line breaks stay with the whitespace.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the regex that cuts text into words before BPE; None is GPT-2's own (in ByteLevel).
GGUF_PRE_TOKENIZERS: dict[str, str | None] = {
    "gpt2": None,
    # SmolLM. llama.cpp splits off every digit (\p{N}) before GPT-2's regex, as SmolLM's own
    # tokenizer.json does (Digits(individual_digits=True)); transformers' GGUF converter has no entry
    # for "smollm" and keeps GPT-2's regex alone, and so do we. No merge joins a digit 0-9 to anything, so
    # the two agree except on whitespace just before a digit, which GPT-2's regex splits off:
    # "a   1" is a ĠĠ Ġ 1 here and in transformers, a ĠĠĠ 1 in llama.cpp; "\n    42" is ĊĠĠĠ Ġ 4 2
    # here, ĊĠĠĠĠ 4 2 there.
    "smollm": None,
    # Llama 3. llama.cpp also sets ignore_merges for it (a word that is a whole token is taken as is,
    # even if no merge leads to it) and adds a BOS when the file does not say; transformers does neither.
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
}


def gguf_tokenizer(path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Tokenizer:
    """The tokenizer a GGUF file describes, built from its metadata, with its chat template.

    Byte-level BPE from ``tokenizer.ggml.tokens`` + ``merges``, words split as ``tokenizer.ggml.pre``
    says (``GGUF_PRE_TOKENIZERS``). Control tokens (token type 3: ``<|im_start|>``, ...) are special:
    matched whole in text, dropped by ``decode(skip_special_tokens=True)``; user-defined ones (type 4)
    are matched whole too. bos / eos / unk / pad come from their ids, and ``encode`` adds BOS / EOS
    where ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say so (default: not).
    The ids equal ``transformers``' ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``.
    ``metadata``: ``interop.gguf.read_metadata``'s dict, when the caller has read it already (SmolLM2's
    49k-token list takes about 2 s to read; building the tokenizer from it a fraction of that).
    """
    from transformerkit.interop.gguf import open_gguf, read_metadata  # interop sits beside us, not below

    path = Path(path)
    if metadata is None:
        metadata = read_metadata(open_gguf(path))
    backend, specials = _gguf_backend(metadata, path)
    return Tokenizer(backend, **specials, chat_template=metadata.get("tokenizer.chat_template"))


def _gguf_backend(meta: dict[str, Any], path: Path) -> tuple[tokenizers.Tokenizer, dict[str, str | None]]:
    """The ``tokenizers`` pipeline and the named special tokens of a GGUF's tokenizer metadata."""
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
    if kind not in GGUF_TOKENIZER_MODELS:
        raise DataError(
            f"{path}: its tokenizer.ggml.model is {kind!r}, and the supported GGUF tokenizer models are "
            f"{', '.join(map(repr, GGUF_TOKENIZER_MODELS))} (byte-level BPE). Use the GGUF of a model with a "
            "byte-level BPE tokenizer (SmolLM, Llama 3), or load the model's tokenizer.json folder instead."
        )
    if pre not in GGUF_PRE_TOKENIZERS:
        raise DataError(
            f"{path}: its tokenizer.ggml.pre is {pre!r}, and the supported ones are "
            f"{', '.join(map(repr, GGUF_PRE_TOKENIZERS))}. Load the model's tokenizer.json folder instead."
        )
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    if not tokens or not merges:
        missing = " and ".join(key for key, value in (("tokens", tokens), ("merges", merges)) if not value)
        raise DataError(f"{path} has no tokenizer.ggml.{missing}, so it holds no BPE tokenizer to build.")
    token_types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    # BPE runs on byte symbols (GPT-2's 256-character alphabet); a token the file spells with other
    # characters (a raw space, "é") is respelled as the symbols of its UTF-8 bytes, as transformers does.
    symbols = _byte_symbols()
    alphabet = set(symbols)
    spelled = [t if set(t) <= alphabet else "".join(symbols[b] for b in t.encode("utf-8")) for t in tokens]
    vocab = {token: index for index, token in enumerate(spelled)}
    try:
        model = models.BPE(vocab, [tuple(merge.split(" ")) for merge in merges], fuse_unk=False)
    except Exception as e:  # tokenizers raises a bare Exception
        raise DataError(f"{path}: its tokenizer tokens and merges do not make a BPE vocabulary ({e}).") from e
    backend = tokenizers.Tokenizer(model)
    split = GGUF_PRE_TOKENIZERS[pre]
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    # tokenizer.ggml.add_space_prefix only concerns SentencePiece vocabularies (llama.cpp and transformers
    # ignore it for byte-level BPE), so it is ignored here too.

    specials: dict[str, str | None] = {}
    for name, key in _GGUF_SPECIAL_IDS.items():
        index = meta.get(f"tokenizer.ggml.{key}")
        if index is not None and not 0 <= index < len(tokens):
            raise DataError(f"{path}: tokenizer.ggml.{key} is {index}, but the vocabulary has {len(tokens)} tokens.")
        specials[name] = None if index is None else spelled[index]
    # Special: the control tokens, less any spelled outside the byte alphabet (a mislabel that
    # transformers leaves out too), and the named ones; transformers' GPT2Tokenizer also makes
    # <|endoftext|> special whenever the vocabulary has it. (Where it has not, transformers appends it
    # as a new token past the model's vocabulary; we do not.)
    special = [t for t, kind in zip(tokens, token_types) if kind == _GGUF_CONTROL and set(t) <= alphabet]
    special += [t for t in (*specials.values(), ENDOFTEXT) if t in vocab and t not in special]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    # User-defined tokens (e.g. <think>) are matched whole, as llama.cpp does, but are not special.
    user_defined = [t for t, kind in zip(tokens, token_types) if kind == _GGUF_USER_DEFINED and t in vocab]
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user_defined])

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and specials["bos_token"] is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and specials["eos_token"] is not None
    bos, eos = specials["bos_token"], specials["eos_token"]
    single = " ".join([*([f"{bos}:0"] if add_bos else []), "$A:0", *([f"{eos}:0"] if add_eos else [])])
    pair = " ".join([single, *([f"{bos}:1"] if add_bos else []), "$B:1", *([f"{eos}:1"] if add_eos else [])])
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(t, vocab[t]) for t, wanted in ((bos, add_bos), (eos, add_eos)) if wanted])
    return backend, specials


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> character table: printable bytes stand for themselves, the rest for chr(256 + n)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _chat_template(directory: Path) -> str | None:
    """A saved folder's chat template: chat_template.jinja (transformers 4.5x+), else tokenizer_config.json's."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _read_json_config(directory / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):   # several named templates, as transformers saves them: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    return template if isinstance(template, str) else None


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """A tokenizer by name or location.

    Accepts ``gpt2`` / ``gpt2-vocab`` (the GPT-2 BPE asset), ``bert-base-uncased`` /
    ``minilm-l6`` (BERT's uncased WordPiece, from the minilm-l6 asset's vocab.txt),
    ``char:PATH`` (a character tokenizer of that text file), ``ptb`` / ``ptb-word`` (PTB's
    10,000-word vocabulary, ``ptb_word_tokenizer``), ``word:PATH`` (``word_tokenizer`` of that
    text file), a folder that
    ``Tokenizer.from_directory`` reads (tokenizer.json, e.g. GPT-1's or BERT's;
    vocab.json + merges.txt; encoder.json + vocab.bpe; vocab.txt; one .gguf file),
    a tokenizer.json file, a WordPiece vocab.txt file (lower-cased unless the
    tokenizer_config.json beside it says ``"do_lower_case": false``), a .gguf file
    (``gguf_tokenizer``: its tokenizer and chat template), or another asset's name
    (``smollm2-135m-instruct``: the tokenizer of the GGUF in its folder).
    """
    spec = os.fspath(name_or_path)
    if spec in ("gpt2", "gpt2-vocab"):
        return gpt2_tokenizer()
    if spec in ("bert-base-uncased", "minilm-l6"):
        return wordpiece_tokenizer(fetch("minilm-l6") / "vocab.txt")
    if spec.startswith("char:"):
        return char_tokenizer(read_text(spec.removeprefix("char:")))
    if spec in ("ptb", "ptb-word"):
        return ptb_word_tokenizer()
    if spec.startswith("word:"):
        return word_tokenizer(read_text(spec.removeprefix("word:")))
    path = Path(spec)
    if not path.exists() and spec in CATALOG:
        path = fetch(spec)   # an asset's folder: e.g. smollm2-135m-instruct's, holding one .gguf
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_tokenizer(path)
    if path.is_dir():
        if not (path / "config.json").exists() and (path / "checkpoint" / "config.json").exists():
            path = path / "checkpoint"   # a training run folder: its latest checkpoint's tokenizer
        return Tokenizer.from_directory(path)
    if path.is_file() and path.name == "tokenizer.json":
        return Tokenizer.from_directory(path.parent)
    if path.is_file() and path.suffix == ".txt":
        return wordpiece_tokenizer(path, **_bert_options(path.parent))
    raise ConfigError(
        f"Cannot load a tokenizer from {spec!r}: it is not a known name nor an existing folder or file. "
        "Use 'gpt2' (or 'gpt2-vocab'), 'bert-base-uncased' (or 'minilm-l6'), 'smollm2-135m-instruct', "
        "'char:PATH/TO/TEXT.txt', 'ptb', 'word:PATH/TO/TEXT.txt', a folder holding tokenizer.json (or "
        "vocab.json + merges.txt, or encoder.json + vocab.bpe, or vocab.txt, or one .gguf file), a tokenizer.json "
        "file, a WordPiece vocab.txt file, or a .gguf file."
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


def _wordpiece_backend(
    vocab_file: Path, *, lowercase: bool, strip_accents: bool | None, max_input_chars_per_word: int = 100
) -> tokenizers.Tokenizer:
    """BERT's full pipeline around the vocabulary in ``vocab_file``."""
    if max_input_chars_per_word < 1:
        raise ConfigError(f"max_input_chars_per_word={max_input_chars_per_word} must be at least 1.")
    model = models.WordPiece(
        _read_wordpiece_vocab(vocab_file),
        unk_token=UNK,
        continuing_subword_prefix=WORDPIECE_PREFIX,
        max_input_chars_per_word=max_input_chars_per_word,
    )
    backend = _bert_pipeline(model, lowercase=lowercase, strip_accents=strip_accents)
    _add_bert_special_tokens(backend)
    return backend


def _bert_pipeline(model: models.WordPiece, *, lowercase: bool, strip_accents: bool | None) -> tokenizers.Tokenizer:
    """BERT's normalizer, pre-tokenizer and decoder around ``model`` (its special tokens come after training)."""
    backend = tokenizers.Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=WORDPIECE_PREFIX, cleanup=True)
    return backend


def _add_bert_special_tokens(backend: tokenizers.Tokenizer) -> None:
    """Mark BERT's special tokens as special (never split, never lower-cased) and add [CLS]/[SEP] around inputs."""
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BERT_SPECIAL_TOKENS.values()])
    cls, sep = BERT_SPECIAL_TOKENS["cls_token"], BERT_SPECIAL_TOKENS["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )


def _read_wordpiece_vocab(path: Path) -> dict[str, int]:
    """Token -> id of a vocab.txt, refusing files that are something else (JSON, merges, ...)."""

    def not_a_vocabulary(problem: str) -> DataError:
        return DataError(f"{path} is not a WordPiece vocabulary: {problem}. {_VOCAB_TXT_LAYOUT}")

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist. Point at a WordPiece vocab.txt, e.g. the minilm-l6 asset's.") from e
    except UnicodeDecodeError as e:
        raise not_a_vocabulary(f"it is not UTF-8 text ({e})") from e
    if not text.strip():
        raise not_a_vocabulary("it is empty")
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    if lines[0].lstrip().startswith("{"):
        raise not_a_vocabulary("it is JSON (a vocab.json or tokenizer.json?)")
    if lines[0].startswith("#version"):
        raise not_a_vocabulary("it is a BPE merges file")
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        if not token:
            raise not_a_vocabulary(f"line {index + 1} is empty")
        if " " in token or "\t" in token:
            raise not_a_vocabulary(
                f"line {index + 1} is {token!r}, and no token holds a space or tab (a BPE merges file?)"
            )
        if token in vocab:
            raise not_a_vocabulary(f"{token!r} is on line {vocab[token] + 1} and again on line {index + 1}")
        vocab[token] = index
    missing = [t for t in BERT_SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise not_a_vocabulary(f"it lacks the special token(s) {', '.join(missing)}")
    return vocab


def _bert_options(directory: Path) -> dict[str, Any]:
    """``lowercase`` / ``strip_accents`` from a folder's tokenizer_config.json (BERT's defaults without one)."""
    config = _read_json_config(directory / "tokenizer_config.json")
    return {"lowercase": bool(config.get("do_lower_case", True)), "strip_accents": config.get("strip_accents")}


def _check_examples(
    name: str, examples: Sequence[str] | Sequence[Sequence[str]], is_split_into_words: bool, allow_empty: bool = False
) -> list[Any]:
    """The examples as a list, refusing one that has nothing to encode (it would be [CLS] [SEP] alone)
    unless ``allow_empty``."""
    if isinstance(examples, str):
        raise DataError(f"{name} is one string; batch_encode takes a list of texts: pass [{name}].")
    examples = list(examples)
    if not examples:
        raise DataError(f"{name} is empty: pass at least one example.")
    for index, example in enumerate(examples):
        if is_split_into_words:
            if isinstance(example, str):
                raise DataError(
                    f"{name}[{index}] is a string, but is_split_into_words=True wants a list of words. "
                    "Split it (e.g. text.split()), or pass is_split_into_words=False."
                )
            blank = not any(word.strip() for word in example)
        else:
            if not isinstance(example, str):
                raise DataError(
                    f"{name}[{index}] is a {type(example).__name__}, not a string. "
                    "For lists of words pass is_split_into_words=True."
                )
            blank = not example.strip()
        if blank and not allow_empty:
            raise DataError(
                f"{name}[{index}] is {example!r}: empty or only whitespace, so it has no token to encode. "
                "Drop it from the batch or give it text."
            )
    return examples


def _refuse_longer_than(max_length: int, encodings: Sequence[tokenizers.Encoding]) -> None:
    for index, encoding in enumerate(encodings):
        length = sum(encoding.attention_mask)  # the padding is not part of it
        if length > max_length:
            raise DataError(
                f"Example {index} is {length} tokens long (special tokens included), more than "
                f"max_length={max_length}, and truncation=False. Pass truncation=True to cut it, "
                "raise max_length, or shorten the text."
            )


def _read_json_config(path: Path) -> dict[str, Any]:
    """A Hugging Face JSON config file's content, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}. Fix or delete the file.") from e
    if not isinstance(config, dict):
        raise DataError(f"{path} holds a JSON {type(config).__name__}, not an object. Fix or delete the file.")
    return config


def _special_tokens(directory: Path, backend: tokenizers.Tokenizer) -> dict[str, str | None]:
    """Which tokens are special: the folder's Hugging Face config files, else conventional names."""
    declared: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later file wins
        config = _read_json_config(directory / name)
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

