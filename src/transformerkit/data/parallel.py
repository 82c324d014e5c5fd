"""Parallel text for translation: (source, target) sentence pairs with fixed train/valid/test splits.

Catalog data set (``docs/data.md`` has the counts and the reasons):

- ``bible-en-es``: the King James Version (English, 1769 text) and the Reina-Valera 1909
  (Spanish), verse by verse. Both SWORD modules use the KJV versification, so verse i
  of one is verse i of the other. Split **by book**: ``TEST_BOOKS`` and ``VALID_BOOKS``
  are whole books, so no chapter of a test book is seen in training.
  ``bible-es-en`` is the same data, Spanish to English.

``load_parallel`` also reads a user's file: UTF-8 text, one pair per line as
``source<TAB>target``, split 80/10/10 by ``seed`` with ``labelled.split_indices``
(copies of one source sentence stay in one split).

``train_joint_tokenizer`` (from ``tokenization``, importable from here too) trains the one
subword vocabulary that both languages share.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from transformerkit.assets import fetch
from transformerkit.data.labelled import (
    LOADERS,
    SPLIT_NAMES,
    load_labelled,
    read_nonempty,
    split_indices,
    split_table,
    text_key,
)
from transformerkit.data.ptb import load_ptb
from transformerkit.data.sword import Verse, read_ztext
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import train_joint_tokenizer  # noqa: F401  (re-exported: data + its tokenizer)

Pair = tuple[str, str]  # (source text, target text)


@dataclass
class ParallelData:
    """Sentence pairs split into train / valid / test; each split is a list of ``(source, target)``.

    ``source_lang`` / ``target_lang`` are language codes (``"en"``, ``"es"``) or the
    ``"source"`` / ``"target"`` of a user's file; ``notes`` says how the split was made.
    ``refs`` names each pair of a split where the data set has names (``"Gen 1:1"``
    for the Bible, to report scores per book); it is empty for a user's file.
    """

    name: str
    source_lang: str
    target_lang: str
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    notes: dict[str, str] = field(default_factory=dict)
    refs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def splits(self) -> dict[str, list[Pair]]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: ``"pairs"``, then the whitespace-separated words on each side."""
        return {
            split: {
                "pairs": len(pairs),
                f"{self.source_lang} words": sum(len(source.split()) for source, _ in pairs),
                f"{self.target_lang} words": sum(len(target.split()) for _, target in pairs),
            }
            for split, pairs in self.splits.items()
        }

    def summary_table(self) -> str:
        """``summary()`` as a plain-text table with a total column, then the notes, for printing."""
        table = split_table(f"{self.name}: {self.source_lang} -> {self.target_lang}", self.summary(), column_width=9)
        return "\n".join([table, *(f"{key}: {value}" for key, value in self.notes.items())])


# ---------------------------------------------------------------- bible-en-es

BIBLE_MODULES: dict[str, str] = {"en": "engKJV2006eb", "es": "spaRV1909eb"}  # language -> module folder

# Whole books held out, spread over both testaments and over kinds of text (story, wisdom,
# prophecy, letters), and chosen among books that have no near-copy elsewhere (no synoptic
# gospel, not Kings/Chronicles, not Ephesians/Colossians or 2 Peter/Jude) and whose verse
# numbering is the same in both modules. Test: 1,221 verses, valid: 1,429 (about 4% each).
TEST_BOOKS: tuple[str, ...] = ("Ruth", "Esth", "Eccl", "Joel", "Mic", "Nah", "Hab",
                               "Gal", "Phil", "Jas", "1John")
VALID_BOOKS: tuple[str, ...] = ("Song", "Lam", "Amos", "Zeph", "Hag", "Zech",
                                "Rom", "1Thess", "2Tim", "1Pet")


def load_bible_en_es(source: str = "en", target: str = "es") -> ParallelData:
    """KJV English and Reina-Valera 1909 Spanish verse pairs, split by book (``TEST_BOOKS``, ``VALID_BOOKS``).

    ``source`` and ``target`` are ``"en"`` and ``"es"`` in either order. Of the 31,102 verses,
    ``aligned_verse_pairs`` keeps the 30,864 whose numbers mean the same text in both
    modules. ``refs`` names each pair (``"Ruth 1:1"``).
    """
    if {source, target} != set(BIBLE_MODULES):
        raise ConfigError(
            f"source={source!r}, target={target!r}: bible-en-es has English ('en') and Spanish ('es'); "
            "pass source='en', target='es' or the reverse."
        )
    verses = read_bible(fetch("bible-en-es"))
    pairs = aligned_verse_pairs(verses["en"], verses["es"])
    test_books, valid_books = set(TEST_BOOKS), set(VALID_BOOKS)
    splits: dict[str, list[Pair]] = {split: [] for split in SPLIT_NAMES}
    refs: dict[str, list[str]] = {split: [] for split in SPLIT_NAMES}
    for (book, chapter, verse), english, spanish in pairs:
        split = "test" if book in test_books else "valid" if book in valid_books else "train"
        splits[split].append((english, spanish) if source == "en" else (spanish, english))
        refs[split].append(f"{book} {chapter}:{verse}")
    return ParallelData(
        f"bible-{source}-{target}", source, target, splits["train"], splits["valid"], splits["test"],
        notes={"test books": " ".join(TEST_BOOKS), "valid books": " ".join(VALID_BOOKS)}, refs=refs,
    )


def read_bible(folder: str | PathLike) -> dict[str, list[Verse]]:
    """Both modules of the ``bible-en-es`` asset, cleaned: ``{"en": verses, "es": verses}``.

    ``folder`` is what ``fetch("bible-en-es")`` returns. Titles inside verses are kept,
    because the Spanish prints psalm superscriptions, Psalm 119's letters and the epistles'
    closing notes as verse text where the KJV marks them as titles. The KJV's paragraph
    signs (``¶``) and the Hebrew letters of Psalm 119's headings are dropped; the
    Spanish chapter openings in capitals are undone (``undo_drop_caps``).
    """
    folder = Path(folder)
    english = [(b, c, v, clean_kjv(text)) for b, c, v, text in read_ztext(folder / BIBLE_MODULES["en"], titles=True)]
    spanish = read_ztext(folder / BIBLE_MODULES["es"], titles=True)
    casing = word_casing(text for *_, text in spanish)
    spanish = [(b, c, v, undo_drop_caps(text, casing) if v == 1 else text) for b, c, v, text in spanish]
    return {"en": english, "es": spanish}


_KJV_MARKS = re.compile(r"[¶\u0590-\u05ff]")  # paragraph sign, Hebrew letters


def clean_kjv(text: str) -> str:
    """A KJV verse without its paragraph signs and Hebrew letters (they have no Spanish counterpart)."""
    return " ".join(_KJV_MARKS.sub(" ", text).split())


_WORD = re.compile(r"[^\W\d_]+")


def word_casing(texts: Iterable[str]) -> dict[str, str]:
    """The usual spelling of each word, lower-cased -> its most frequent form that is not all capitals."""
    forms: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        for word in _WORD.findall(text):
            if not (len(word) > 1 and word.isupper()):
                forms[word.lower()][word] += 1
    return {lower: counts.most_common(1)[0][0] for lower, counts in forms.items()}


_RUN_END = re.compile(r"[,;:!?]?\s+[¿¡]?")  # what may sit between a drop-cap run and the running text


def undo_drop_caps(text: str, casing: dict[str, str]) -> str:
    """The verse with its chapter-opening capitals written normally: "EN el principio" -> "En el principio".

    The Reina-Valera prints the first word or two of each chapter in capitals ("Y DIJO
    David", "DE SIETE años", after a psalm's superscription "JEHOVÁ es mi pastor"). The
    first run of words in capitals (one of two letters or more) that starts a sentence and
    flows into running text (perhaps a comma or colon, a space, then a word with a
    lower-case letter) gets each word's usual spelling (``casing``), the first word
    capitalised. Other capitals (the divine name "JEHOVÁ" in Exodus 6, "la iglesia en
    SARDIS") are not at a sentence start, or not followed by running text, and stay.
    """
    words = list(_WORD.finditer(text))

    def joined(a: int, b: int) -> bool:  # only spaces between words a and b
        return text[words[a].end():words[b].start()].isspace()

    i = 0
    while i < len(words):
        if len(words[i].group()) < 2 or not words[i].group().isupper():
            i += 1
            continue
        first, last = i, i
        while first > 0 and len(words[first - 1].group()) == 1 and words[first - 1].group().isupper() \
                and joined(first - 1, first):  # one-letter capitals before it: "Y DIJO", "Y Á SUS"
            first -= 1
        while last + 1 < len(words) and words[last + 1].group().isupper() and joined(last, last + 1):
            last += 1
        gap = _RUN_END.match(text, words[last].end())
        following = words[last + 1] if last + 1 < len(words) else None
        if (_starts_sentence(text, words[first].start()) and gap and following
                and following.start() == gap.end() and not following.group().isupper()):
            respelled = [casing.get(word.group().lower(), word.group().lower()) for word in words[first:last + 1]]
            respelled[0] = respelled[0][0].upper() + respelled[0][1:]
            return text[:words[first].start()] + " ".join(respelled) + text[words[last].end():]
        i = last + 1
    return text


def _starts_sentence(text: str, position: int) -> bool:
    before = text[:position].rstrip("¿¡ ")
    return not before or before[-1] in ".:!?"


def aligned_verse_pairs(english: list[Verse], spanish: list[Verse]) -> list[tuple[tuple[str, int, int], str, str]]:
    """``((book, chapter, verse), english, spanish)`` for the verses whose numbers mean the same text in both.

    Left out: a pair where either verse is empty; the verse just before an empty Spanish
    verse (where the Spanish numbering differs, the missing verse's words are often appended
    to it, e.g. 2 Samuel 20:25-26); and the chapters ``misnumbered_chapters`` finds.
    """
    keys = [verse[:3] for verse in english]
    if keys != [verse[:3] for verse in spanish]:
        raise DataError("The two Bible modules do not list the same verses; both must use the KJV versification.")
    skipped_chapters = misnumbered_chapters(english, spanish)
    merged = {keys[i - 1] for i, verse in enumerate(spanish) if not verse[3] and i > 0}
    return [
        (key, en[3], es[3])
        for key, en, es in zip(keys, english, spanish)
        if en[3] and es[3] and key not in merged and key[:2] not in skipped_chapters
    ]


# A translation's verse is about as long as the original's: log(len es / len en) has median
# -0.09 and a spread of 0.14 over the whole Bible, and the mean distance of a chapter's verses
# from that median (its "mismatch") is 0.07-0.15 for 90% of chapters.
SHIFTED_MISMATCH = 0.2  # twice the usual: misnumbered if a shifted pairing also fits clearly better
MISNUMBERED_MISMATCH = 0.3  # three times the usual: misnumbered whatever the shifts say
MAX_SHIFT = 5  # verses


def misnumbered_chapters(english: list[Verse], spanish: list[Verse]) -> set[tuple[str, int]]:
    """The ``(book, chapter)`` whose verses the two modules number differently, found from verse lengths.

    Where the Spanish numbering differs from the KJV (Jonah 1:17 is the Spanish 2:1), the
    module puts verse n of its own numbering at KJV position n, so all of Jonah 2 is one
    verse off. The mismatch of a chapter is the mean of ``|log(len es / len en) - median|``
    over its verse pairs. A chapter is misnumbered when its mismatch exceeds
    ``MISNUMBERED_MISMATCH``, or exceeds ``SHIFTED_MISMATCH`` and pairing English verse i
    with Spanish verse i + k (0 < |k| <= ``MAX_SHIFT``) brings it below 0.7 times as much.
    On bible-en-es this finds 10 chapters, every one checked by eye to be off: Numbers 13
    and 30, 1 Samuel 24, 1 Chronicles 21, 2 Chronicles 33, Job 39 and 40, Hosea 12,
    Jonah 2, 2 Corinthians 13. The next highest mismatch (Proverbs 9, 0.21) is aligned.
    """
    typical = statistics.median(
        math.log(len(es[3]) / len(en[3])) for en, es in zip(english, spanish) if en[3] and es[3]
    )
    lengths: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for en, es in zip(english, spanish):
        lengths[en[:2]].append((len(en[3]), len(es[3])))

    def mismatch(chapter: list[tuple[int, int]], shift: int) -> float:
        costs = [abs(math.log(chapter[i + shift][1] / en_length) - typical)
                 for i, (en_length, _) in enumerate(chapter)
                 if 0 <= i + shift < len(chapter) and en_length and chapter[i + shift][1]]
        return statistics.mean(costs) if len(costs) >= 3 else math.inf

    skipped = set()
    for chapter, pairs in lengths.items():
        aligned = mismatch(pairs, 0)
        if aligned == math.inf:  # too short to judge (Psalm 117 has 2 verses)
            continue
        shifted = min(mismatch(pairs, k) for k in range(-MAX_SHIFT, MAX_SHIFT + 1) if k)
        if aligned > MISNUMBERED_MISMATCH or (aligned > SHIFTED_MISMATCH and shifted < 0.7 * aligned):
            skipped.add(chapter)
    return skipped


# ---------------------------------------------------------------- user files


def read_tsv_pairs(path: str | PathLike) -> list[Pair]:
    """The ``(source, target)`` of each line of a UTF-8 ``source<TAB>target`` file; blank lines are skipped."""
    path = Path(path)
    pairs = []
    for line_number, line in enumerate(read_nonempty(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}, line {line_number}: {len(fields) - 1} tabs in {line[:80]!r}. Write each pair as "
                "source<TAB>target on one line, with exactly one tab (and no tab inside a sentence)."
            )
        source, target = (" ".join(side.split()) for side in fields)
        if not source or not target:
            side = "source (before the tab)" if not source else "target (after the tab)"
            raise DataError(f"{path}, line {line_number}: the {side} is empty. Fill it in or remove the line.")
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"{path} has no pairs. Write one source<TAB>target pair per line.")
    return pairs


PARALLEL_LOADERS: dict[str, Callable[[], ParallelData]] = {
    "bible-en-es": lambda: load_bible_en_es("en", "es"),
    "bible-es-en": lambda: load_bible_en_es("es", "en"),
}


def load_parallel(name_or_path: str | PathLike, seed: int = 0) -> ParallelData:
    """A catalog parallel data set by name (``PARALLEL_LOADERS``), or a user's ``source<TAB>target`` file.

    A catalog set has fixed splits (``seed`` is not used); a file is split 80/10/10 with ``seed``,
    copies of one source sentence (after collapsing whitespace) in the same split.
    """
    spec = str(name_or_path)
    if spec in PARALLEL_LOADERS:
        return PARALLEL_LOADERS[spec]()
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"{spec!r} is neither a known parallel data set nor an existing file. Use one of "
            f"{', '.join(PARALLEL_LOADERS)}, or the path of a UTF-8 file of source<TAB>target lines."
        )
    pairs = read_tsv_pairs(path)
    splits = split_indices([text_key(source) for source, _ in pairs], [0] * len(pairs), seed)
    return ParallelData(str(path), "source", "target", *([pairs[i] for i in split] for split in splits),
                        notes={"split": f"80/10/10 by line, seed {seed}"})


def load_split_data(name_or_path: str | PathLike, seed: int = 0):
    """Any data set with fixed splits, by name or file: parallel pairs (bible-en-es, a .tsv of
    source<TAB>target without header), labelled data (bbc-news, ..., a file with text and label),
    or the PTB language-modelling text (ptb)."""
    path = Path(name_or_path)
    name = str(name_or_path)
    if name == "ptb" and not path.exists():
        return load_ptb()
    if name not in LOADERS and name not in PARALLEL_LOADERS and not path.exists():
        raise ConfigError(f"{name!r} is neither a data set nor an existing file. Data sets: "
                          f"{', '.join([*LOADERS, *PARALLEL_LOADERS, 'ptb'])}; or pass a data file.")
    is_pairs = name in PARALLEL_LOADERS or (
        path.suffix.lower() == ".tsv" and path.is_file() and not _has_text_label_header(path))
    return load_parallel(name, seed=seed) if is_pairs else load_labelled(name, seed=seed)


def _has_text_label_header(path: Path) -> bool:
    """A labelled .tsv names its ``text`` and ``label`` columns on line 1; a pairs .tsv has no header."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = {column.strip() for column in f.readline().split("\t")}
    return {"text", "label"} <= header
