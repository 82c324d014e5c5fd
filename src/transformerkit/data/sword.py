"""A reader for SWORD zText Bible modules (the format of Debian's ``sword-text-*`` packages).

A zText module is a folder with two sets of three files, ``ot.*`` (Old Testament)
and ``nt.*`` (New Testament). All integers are little-endian and unsigned:

- ``.bzs`` block index: one 12-byte entry per block,
  ``(offset in .bzz uint32, compressed size uint32, uncompressed size uint32)``;
- ``.bzz`` the blocks themselves, each a zlib stream (the module's ``CompressType=ZIP``);
- ``.bzv`` verse index: one 10-byte entry per index position,
  ``(block number uint32, offset in the decompressed block uint32, size uint16)``;
  size 0 means the position holds no text.

The verse index is laid out by the module's versification. For each testament:
position 0 is the module heading, 1 the testament heading; then for every book
one position for the book heading, and for every chapter one for the chapter
heading followed by one per verse. So Genesis 1:1 is OT position 4
(0, 1, book, chapter, verse). The headings ("intro" entries) hold markup such as
``<div type="book" .../>``, ``<chapter osisID="Gen.1" .../>`` and book titles;
they are not verses and are skipped, but their ``osisID`` is checked against
the table so a module of another versification is refused instead of misread.

The text is OSIS XML. ``osis_to_text`` keeps the words (``<w>``, ``<transChange>``,
``<divineName>``, quotes, poetry lines) and drops notes and titles with their content.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from transformerkit.errors import DataError

BLOCK_ENTRY = struct.Struct("<III")  # offset, compressed size, uncompressed size
VERSE_ENTRY = struct.Struct("<IIH")  # block number, offset in the block, size
TESTAMENTS: tuple[str, ...] = ("ot", "nt")
TESTAMENT_HEADINGS = 2  # module heading, testament heading


@dataclass(frozen=True)
class Book:
    """One book of a versification: its OSIS id, English name, testament and verses per chapter."""

    osis_id: str
    name: str
    testament: str
    chapter_verses: tuple[int, ...]


Verse = tuple[str, int, int, str]  # (book OSIS id, chapter, verse, text)


def _books(testament: str, table: str) -> tuple[Book, ...]:
    """Books from lines ``OSIS id|English name|verses of chapter 1, 2, ...``; an indented line continues one."""
    rows: list[list[str]] = []
    for line in table.strip("\n").splitlines():
        if line[:1].isspace():
            rows[-1][2] += " " + line
        else:
            rows.append(line.split("|"))
    return tuple(Book(osis_id.strip(), name.strip(), testament, tuple(int(n) for n in counts.split()))
                 for osis_id, name, counts in rows)


# The KJV versification (SWORD's "KJV" system, the 66 books of the Protestant canon):
# 929 + 260 chapters, 23,145 + 7,957 = 31,102 verses.
KJV_BOOKS: tuple[Book, ...] = _books("ot", """
Gen    |Genesis        |31 25 24 26 32 22 24 22 29 32 32 20 18 24 21 16 27 33 38 18 34 24 20 67 34 35 46 22 35
                        43 55 32 20 31 29 43 36 30 23 23 57 38 34 34 28 34 31 22 33 26
Exod   |Exodus         |22 25 22 31 23 30 25 32 35 29 10 51 22 31 27 36 16 27 25 26 36 31 33 18 40 37 21 43 46
                        38 18 35 23 35 35 38 29 31 43 38
Lev    |Leviticus      |17 16 17 35 19 30 38 36 24 20 47 8 59 57 33 34 16 30 37 27 24 33 44 23 55 46 34
Num    |Numbers        |54 34 51 49 31 27 89 26 23 36 35 16 33 45 41 50 13 32 22 29 35 41 30 25 18 65 23 31 40
                        16 54 42 56 29 34 13
Deut   |Deuteronomy    |46 37 29 49 33 25 26 20 29 22 32 32 18 29 23 22 20 22 21 20 23 30 25 22 19 19 26 68 29
                        20 30 52 29 12
Josh   |Joshua         |18 24 17 24 15 27 26 35 27 43 23 24 33 15 63 10 18 28 51 9 45 34 16 33
Judg   |Judges         |36 23 31 24 31 40 25 35 57 18 40 15 25 20 20 31 13 31 30 48 25
Ruth   |Ruth           |22 23 18 22
1Sam   |1 Samuel       |28 36 21 22 12 21 17 22 27 27 15 25 23 52 35 23 58 30 24 42 15 23 29 22 44 25 12 25 11
                        31 13
2Sam   |2 Samuel       |27 32 39 12 25 23 29 18 13 19 27 31 39 33 37 23 29 33 43 26 22 51 39 25
1Kgs   |1 Kings        |53 46 28 34 18 38 51 66 28 29 43 33 34 31 34 34 24 46 21 43 29 53
2Kgs   |2 Kings        |18 25 27 44 27 33 20 29 37 36 21 21 25 29 38 20 41 37 37 21 26 20 37 20 30
1Chr   |1 Chronicles   |54 55 24 43 26 81 40 40 44 14 47 40 14 17 29 43 27 17 19 8 30 19 32 31 31 32 34 21 30
2Chr   |2 Chronicles   |17 18 17 22 14 42 22 18 31 19 23 16 22 15 19 14 19 34 11 37 20 12 21 27 28 23 9 27 36
                        27 21 33 25 33 27 23
Ezra   |Ezra           |11 70 13 24 17 22 28 36 15 44
Neh    |Nehemiah       |11 20 32 23 19 19 73 18 38 39 36 47 31
Esth   |Esther         |22 23 15 17 14 14 10 17 32 3
Job    |Job            |22 13 26 21 27 30 21 22 35 22 20 25 28 22 35 22 16 21 29 29 34 30 17 25 6 14 23 28 25
                        31 40 22 33 37 16 33 24 41 30 24 34 17
Ps     |Psalms         |6 12 8 8 12 10 17 9 20 18 7 8 6 7 5 11 15 50 14 9 13 31 6 10 22 12 14 9 11 12 24 11 22
                        22 28 12 40 22 13 17 13 11 5 26 17 11 9 14 20 23 19 9 6 7 23 13 11 11 17 12 8 12 11 10
                        13 20 7 35 36 5 24 20 28 23 10 12 20 72 13 19 16 8 18 12 13 17 7 18 52 17 16 15 5 23
                        11 13 12 9 9 5 8 28 22 35 45 48 43 13 31 7 10 10 9 8 18 19 2 29 176 7 8 9 4 8 5 6 5 6
                        8 8 3 18 3 3 21 26 9 8 24 13 10 7 12 15 21 10 20 14 9 6
Prov   |Proverbs       |33 22 35 27 23 35 27 36 18 32 31 28 25 35 33 33 28 24 29 30 31 29 35 34 28 28 27 28 27
                        33 31
Eccl   |Ecclesiastes   |18 26 22 16 20 12 29 17 18 20 10 14
Song   |Song of Solomon|17 17 11 16 16 13 13 14
Isa    |Isaiah         |31 22 26 6 30 13 25 22 21 34 16 6 22 32 9 14 14 7 25 6 17 25 18 23 12 21 13 29 24 33 9
                        20 24 17 10 22 38 22 8 31 29 25 28 28 25 13 15 22 26 11 23 15 12 17 13 12 21 14 21 22
                        11 12 19 12 25 24
Jer    |Jeremiah       |19 37 25 31 31 30 34 22 26 25 23 17 27 22 21 21 27 23 15 18 14 30 40 10 38 24 22 17 32
                        24 40 44 26 22 19 32 21 28 18 16 18 22 13 30 5 28 7 47 39 46 64 34
Lam    |Lamentations   |22 22 66 22 22
Ezek   |Ezekiel        |28 10 27 17 17 14 27 18 11 22 25 28 23 23 8 63 24 32 14 49 32 31 49 27 17 21 36 26 21
                        26 18 32 33 31 15 38 28 23 29 49 26 20 27 31 25 24 23 35
Dan    |Daniel         |21 49 30 37 31 28 28 27 27 21 45 13
Hos    |Hosea          |11 23 5 19 15 11 16 14 17 15 12 14 16 9
Joel   |Joel           |20 32 21
Amos   |Amos           |15 16 15 13 27 14 17 14 15
Obad   |Obadiah        |21
Jonah  |Jonah          |17 10 10 11
Mic    |Micah          |16 13 12 13 15 16 20
Nah    |Nahum          |15 13 19
Hab    |Habakkuk       |17 20 19
Zeph   |Zephaniah      |18 15 20
Hag    |Haggai         |15 23
Zech   |Zechariah      |21 13 10 14 11 15 14 23 17 12 17 14 9 21
Mal    |Malachi        |14 17 18 6
""") + _books("nt", """
Matt   |Matthew        |25 23 17 25 48 34 29 34 38 42 30 50 58 36 39 28 27 35 30 34 46 46 39 51 46 75 66 20
Mark   |Mark           |45 28 35 41 43 56 37 38 50 52 33 44 37 72 47 20
Luke   |Luke           |80 52 38 44 39 49 50 56 62 42 54 59 35 35 32 31 37 43 48 47 38 71 56 53
John   |John           |51 25 36 54 47 71 53 59 41 42 57 50 38 31 27 33 26 40 42 31 25
Acts   |Acts           |26 47 26 37 42 15 60 40 43 48 30 25 52 28 41 40 34 28 41 38 40 30 35 27 27 32 44 31
Rom    |Romans         |32 29 31 25 21 23 25 39 33 21 36 21 14 23 33 27
1Cor   |1 Corinthians  |31 16 23 21 13 20 40 13 27 33 34 31 13 40 58 24
2Cor   |2 Corinthians  |24 17 18 18 21 18 16 24 15 18 33 21 14
Gal    |Galatians      |24 21 29 31 26 18
Eph    |Ephesians      |23 22 21 32 33 24
Phil   |Philippians    |30 30 21 23
Col    |Colossians     |29 23 25 18
1Thess |1 Thessalonians|10 20 13 18 28
2Thess |2 Thessalonians|12 17 18
1Tim   |1 Timothy      |20 15 16 16 25 21
2Tim   |2 Timothy      |18 26 17 22
Titus  |Titus          |16 15 15
Phlm   |Philemon       |25
Heb    |Hebrews        |14 18 19 16 14 20 28 13 28 39 40 29 25
Jas    |James          |27 26 18 17 20
1Pet   |1 Peter        |25 25 22 19 14
2Pet   |2 Peter        |21 22 18
1John  |1 John         |10 29 24 21 21
2John  |2 John         |13
3John  |3 John         |14
Jude   |Jude           |25
Rev    |Revelation     |20 29 22 11 14 17 17 13 21 11 19 17 18 20 8 21 18 24 21 15 27 21
""")

# ---------------------------------------------------------------- the verse index layout


@dataclass(frozen=True)
class IndexEntry:
    """What one verse-index position holds: a heading (``verse`` 0; ``chapter`` 0 for a book) or a verse.

    ``book`` is None for the module and testament headings.
    """

    book: str | None
    chapter: int
    verse: int

    @property
    def is_verse(self) -> bool:
        return self.verse > 0


def index_layout(books: Sequence[Book]) -> list[IndexEntry]:
    """What each position of one testament's verse index holds, for ``books`` of that testament, in order."""
    layout = [IndexEntry(None, 0, 0)] * TESTAMENT_HEADINGS
    for book in books:
        layout.append(IndexEntry(book.osis_id, 0, 0))
        for chapter, verses in enumerate(book.chapter_verses, 1):
            layout.append(IndexEntry(book.osis_id, chapter, 0))
            layout.extend(IndexEntry(book.osis_id, chapter, verse) for verse in range(1, verses + 1))
    return layout


# ---------------------------------------------------------------- reading


def read_ztext(
    folder: str | PathLike, books: Sequence[Book] = KJV_BOOKS, *, markup: bool = False, titles: bool = False
) -> list[Verse]:
    """Every verse of the zText module in ``folder``, in order: ``(book OSIS id, chapter, verse, text)``.

    ``books`` is the module's versification (its .conf file's ``Versification=``); the
    verse index must have exactly the positions it implies. The text is plain
    (``osis_to_text``) unless ``markup``; a verse the module lacks has text ``""``.
    With ``titles`` the words of titles inside a verse are kept (psalm superscriptions,
    Psalm 119's letter headings, the epistles' closing notes): one module may mark up as a
    title what another prints as part of the verse.
    """
    dropped = DROPPED_ELEMENTS - {"title"} if titles else DROPPED_ELEMENTS
    folder = Path(folder)
    verses: list[Verse] = []
    for testament in TESTAMENTS:
        layout = index_layout([b for b in books if b.testament == testament])
        texts = read_testament(folder, testament)
        if len(texts) != len(layout):
            raise DataError(
                f"{folder / (testament + '.bzv')} has {len(texts)} verse-index entries, but the versification "
                f"given implies {len(layout)} for this testament. The module uses another versification "
                "(see Versification= in its mods.d/*.conf file); pass its book table as books=."
            )
        for position, (entry, text) in enumerate(zip(layout, texts)):
            if entry.is_verse:
                verses.append((entry.book, entry.chapter, entry.verse, text if markup else osis_to_text(text, dropped)))
            else:
                _check_heading(entry, text, folder, testament, position)
    return verses


def read_testament(folder: Path, testament: str) -> list[str]:
    """The raw OSIS text of every position of one testament's verse index (headings included)."""
    paths = {suffix: folder / f"{testament}.{suffix}" for suffix in ("bzs", "bzv", "bzz")}
    data = {}
    for suffix, path in paths.items():
        try:
            data[suffix] = path.read_bytes()
        except FileNotFoundError:
            raise DataError(
                f"{path} does not exist: a SWORD zText module folder holds ot.bzs/.bzv/.bzz and "
                "nt.bzs/.bzv/.bzz. Point at the module's folder (e.g. .../modules/texts/ztext/engKJV2006eb)."
            ) from None
    for suffix, entry in (("bzs", BLOCK_ENTRY), ("bzv", VERSE_ENTRY)):
        if len(data[suffix]) % entry.size:
            raise DataError(
                f"{paths[suffix]} is {len(data[suffix])} bytes, not a whole number of {entry.size}-byte "
                "entries: the file is truncated or not a zText index. Reinstall (re-fetch) the module."
            )
    blocks = [_decompress(data["bzz"], entry, paths["bzz"], number)
              for number, entry in enumerate(BLOCK_ENTRY.iter_unpack(data["bzs"]))]
    texts = []
    for position, (block, offset, size) in enumerate(VERSE_ENTRY.iter_unpack(data["bzv"])):
        if size == 0:
            texts.append("")
            continue
        if block >= len(blocks) or offset + size > len(blocks[block]):
            raise DataError(
                f"{paths['bzv']}: entry {position} points at bytes {offset}..{offset + size} of block {block}, "
                f"outside the {len(blocks)} blocks of {paths['bzz'].name}. The module is damaged; re-fetch it."
            )
        raw = blocks[block][offset:offset + size]
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{paths['bzv']}: entry {position} is not UTF-8 ({e.reason} at byte {e.start}). Only UTF-8 "
                "modules (Encoding=UTF-8 in the .conf file) can be read."
            ) from None
    return texts


def _decompress(bzz: bytes, entry: tuple[int, int, int], path: Path, number: int) -> bytes:
    offset, compressed_size, size = entry
    try:
        block = zlib.decompress(bzz[offset:offset + compressed_size])
    except zlib.error as e:
        raise DataError(
            f"{path}: block {number} (bytes {offset}..{offset + compressed_size}) is not a zlib stream ({e}). "
            "Only CompressType=ZIP modules can be read; otherwise the file is damaged: re-fetch it."
        ) from None
    if len(block) != size:
        raise DataError(
            f"{path}: block {number} unpacks to {len(block)} bytes, but the block index says {size}. "
            "The module is damaged; re-fetch it."
        )
    return block


_OSIS_ID = re.compile(r'<(?:div|chapter)\b[^>]*\bosisID="([^"]+)"')


def _check_heading(entry: IndexEntry, text: str, folder: Path, testament: str, position: int) -> None:
    """Refuse a module whose book or chapter headings are not where the versification puts them."""
    if entry.book is None:
        return
    expected = entry.book if entry.chapter == 0 else f"{entry.book}.{entry.chapter}"
    for found in _OSIS_ID.findall(text):
        if found != expected:
            raise DataError(
                f"{folder / (testament + '.bzv')}: entry {position} should be the heading of {expected} but "
                f"holds {found}. The module's versification differs from the one given; pass its book table "
                "as books=."
            )


# ---------------------------------------------------------------- OSIS markup

# Elements whose content is not part of the verse: footnotes and cross-references, headings.
DROPPED_ELEMENTS: frozenset[str] = frozenset({"note", "title"})
# Elements that stand between words (headings, poetry lines, paragraphs): their tags become a space.
# The tags of any other element (<w>, <transChange>, <divineName>, <q>, ...) vanish without a trace.
BLOCK_ELEMENTS: frozenset[str] = frozenset({"title", "l", "lg", "p", "div", "list", "item", "lb", "chapter"})
_TAG = re.compile(r"<(/?)([A-Za-z][\w:.-]*)[^>]*?(/?)>")


def osis_to_text(markup: str, dropped: Collection[str] = DROPPED_ELEMENTS) -> str:
    """The words of an OSIS verse: tags removed, the ``dropped`` elements (notes, titles) with their content.

    Inline tags vanish (``<w>earth</w>.`` gives ``earth.``); the tags of block elements
    (``BLOCK_ELEMENTS``) and empty elements such as ``<lb/>`` or a poetry line's
    ``<l eID=".."/>`` stand between words, so they become a space. Entities are
    unescaped and runs of whitespace become one space.
    """
    pieces: list[str] = []
    dropped_depth, position = 0, 0
    for tag in _TAG.finditer(markup):
        if dropped_depth == 0:
            pieces.append(markup[position:tag.start()])
        position = tag.end()
        closing, name, empty = tag.group(1) == "/", tag.group(2), tag.group(3) == "/"
        if empty or name in BLOCK_ELEMENTS:
            pieces.append(" ")
        if name in dropped and not empty:
            dropped_depth = max(dropped_depth + (-1 if closing else 1), 0)  # a stray end tag hides nothing
    if dropped_depth == 0:
        pieces.append(markup[position:])
    return " ".join(html.unescape("".join(pieces)).split())
