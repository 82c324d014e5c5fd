"""Parallel data: the SWORD zText reader, the bible-en-es pairs and splits, user TSV files, the joint tokenizer."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from transformerkit.cli import main
from transformerkit.data.parallel import (
    TEST_BOOKS,
    VALID_BOOKS,
    ParallelData,
    aligned_verse_pairs,
    load_bible_en_es,
    load_parallel,
    misnumbered_chapters,
    read_bible,
    undo_drop_caps,
    word_casing,
)
from transformerkit.data.sword import KJV_BOOKS, Book, index_layout, osis_to_text, read_ztext
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import load_tokenizer, train_joint_tokenizer

# ---------------------------------------------------------------- a synthetic zText module

# A two-book versification: Aa (2 chapters: 2 verses, 1 verse) in the OT, Bb (1 chapter, 1 verse) in the NT.
TINY_BOOKS = (Book("Aa", "Alpha", "ot", (2, 1)), Book("Bb", "Beta", "nt", (1,)))
TINY_TEXTS = {
    # module heading, testament heading, book Aa, chapter 1, 1:1, 1:2, chapter 2, 2:1
    "ot": ["", "<milestone/>", '<div osisID="Aa" type="book"/><title>Alpha</title>', '<chapter osisID="Aa.1"/>',
           "<w>In</w> the <w>beginning</w>.", 'Then<note placement="foot">a <reference>note</reference></note> more.',
           '<chapter osisID="Aa.2"/>', ""],
    "nt": ["", "", '<div osisID="Bb" type="book"/>', '<chapter osisID="Bb.1"/>', "Señor &amp; ¿quién?"],
}


def write_ztext(folder: Path, texts: dict[str, list[str]], per_block: int = 2) -> Path:
    """Write a zText module: ``per_block`` index positions per zlib block, offsets little-endian."""
    folder.mkdir(parents=True, exist_ok=True)
    for testament, entries in texts.items():
        bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
        for first in range(0, len(entries), per_block):
            block = bytearray()
            for text in entries[first:first + per_block]:
                raw = text.encode("utf-8")
                bzv += struct.pack("<IIH", first // per_block, len(block), len(raw))
                block += raw
            compressed = zlib.compress(bytes(block))
            bzs += struct.pack("<III", len(bzz), len(compressed), len(block))
            bzz += compressed
        for suffix, data in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
            (folder / f"{testament}.{suffix}").write_bytes(bytes(data))
    return folder


@pytest.fixture
def tiny_module(tmp_path: Path) -> Path:
    return write_ztext(tmp_path / "tiny", TINY_TEXTS)


def test_read_ztext_maps_index_positions_to_verses(tiny_module: Path) -> None:
    assert read_ztext(tiny_module, TINY_BOOKS) == [
        ("Aa", 1, 1, "In the beginning."),
        ("Aa", 1, 2, "Then more."),
        ("Aa", 2, 1, ""),  # size 0: the module lacks the verse
        ("Bb", 1, 1, "Señor & ¿quién?"),
    ]
    assert read_ztext(tiny_module, TINY_BOOKS, markup=True)[0][3] == "<w>In</w> the <w>beginning</w>."


def test_read_ztext_reads_one_block_or_many_alike(tmp_path: Path) -> None:
    one = write_ztext(tmp_path / "one", TINY_TEXTS, per_block=100)
    many = write_ztext(tmp_path / "many", TINY_TEXTS, per_block=1)
    assert (one / "ot.bzs").stat().st_size == 12 and (many / "ot.bzs").stat().st_size == 12 * 8
    assert read_ztext(one, TINY_BOOKS) == read_ztext(many, TINY_BOOKS)


def test_index_layout_of_the_kjv() -> None:
    ot = index_layout([b for b in KJV_BOOKS if b.testament == "ot"])
    nt = index_layout([b for b in KJV_BOOKS if b.testament == "nt"])
    assert len(ot) == 24_115 and len(nt) == 8_246  # the sizes of the real ot.bzv / nt.bzv over 10 bytes
    assert (ot[4].book, ot[4].chapter, ot[4].verse) == ("Gen", 1, 1)
    assert ot[2].chapter == ot[3].verse == 0 and not ot[3].is_verse


def test_kjv_versification_table() -> None:
    assert len(KJV_BOOKS) == 66 and len({b.osis_id for b in KJV_BOOKS}) == 66
    for testament, books, chapters, verses in (("ot", 39, 929, 23_145), ("nt", 27, 260, 7_957)):
        part = [b for b in KJV_BOOKS if b.testament == testament]
        assert len(part) == books
        assert sum(len(b.chapter_verses) for b in part) == chapters
        assert sum(sum(b.chapter_verses) for b in part) == verses
    by_id = {b.osis_id: b for b in KJV_BOOKS}
    assert len(by_id["Ps"].chapter_verses) == 150 and by_id["Ps"].chapter_verses[118] == 176
    assert by_id["John"].chapter_verses[2] == 36 and by_id["Rev"].chapter_verses[-1] == 21


def test_another_versification_is_refused(tiny_module: Path) -> None:
    longer = (Book("Aa", "Alpha", "ot", (3, 1)), TINY_BOOKS[1])
    with pytest.raises(DataError, match="8 verse-index entries.*implies 9.*Versification"):
        read_ztext(tiny_module, longer)
    two_books = (Book("Aa", "Alpha", "ot", (1,)), Book("Cc", "Gamma", "ot", (1,)), TINY_BOOKS[1])  # also 8
    with pytest.raises(DataError, match="entry 6 should be the heading of Cc.1 but holds Aa.2"):
        read_ztext(tiny_module, two_books)


def _truncate_verse_index(module: Path) -> None:
    (module / "ot.bzv").write_bytes((module / "ot.bzv").read_bytes()[:-3])


def _garble_blocks(module: Path) -> None:
    (module / "ot.bzz").write_bytes(b"x" * (module / "ot.bzz").stat().st_size)


def _misstate_block_size(module: Path) -> None:
    index = (module / "ot.bzs").read_bytes()
    offset, compressed, _ = struct.unpack_from("<III", index)
    (module / "ot.bzs").write_bytes(struct.pack("<III", offset, compressed, 999) + index[12:])


def _point_past_the_blocks(module: Path) -> None:
    (module / "nt.bzv").write_bytes((module / "nt.bzv").read_bytes()[:-10] + struct.pack("<IIH", 7, 0, 5))


@pytest.mark.parametrize("damage, message", [
    (lambda module: (module / "nt.bzz").unlink(), "nt.bzz does not exist"),
    (_truncate_verse_index, "not a whole number of 10-byte"),
    (_garble_blocks, "not a zlib stream"),
    (_misstate_block_size, "unpacks to .* index says 999"),
    (_point_past_the_blocks, "outside the 3 blocks"),
])
def test_damaged_module_is_a_data_error(tiny_module: Path, damage, message: str) -> None:
    damage(tiny_module)
    with pytest.raises(DataError, match=message):
        read_ztext(tiny_module, TINY_BOOKS)


# ---------------------------------------------------------------- OSIS markup


def test_osis_to_text_keeps_words_and_drops_notes_and_titles() -> None:
    markup = ('<div type="x-milestone" subType="x-preverse" sID="pv1"/><title type="psalm" canonical="true">'
              'A Psalm.</title>¶ <w lemma="strong:H3068">LORD</w>, <transChange type="added">it is</transChange> '
              'good<note placement="foot"><reference type="annotateRef">1.4 </reference>Heb. <w>x</w></note>: '
              '<l sID="a"/>the <divineName>Lord</divineName><l eID="a"/><l sID="b"/>&amp; his<lb/>word&apos;s.'
              '<l eID="b"/>')
    assert osis_to_text(markup) == "¶ LORD, it is good: the Lord & his word's."
    assert osis_to_text(markup, dropped={"note"}) == "A Psalm. ¶ LORD, it is good: the Lord & his word's."


def test_osis_to_text_survives_a_stray_end_tag() -> None:
    assert osis_to_text("one</note> two <note>gone</note>three") == "one two three"


# ---------------------------------------------------------------- cleaning and alignment


@pytest.mark.parametrize("verse, expected", [
    ("EN el principio crió Dios", "En el principio crió Dios"),
    ("Y DIJO David: Esta es", "Y dijo David: Esta es"),
    ("DE SIETE años era Joas", "De siete años era Joas"),
    ("Salmo de David. JEHOVÁ es mi pastor", "Salmo de David. Jehová es mi pastor"),
    ("Salmo de David. JEHOVÁ, ¿quién habitará", "Salmo de David. Jehová, ¿quién habitará"),
    ("¿SACARÁS tú al leviathán", "¿Sacarás tú al leviathán"),
    ("ALEPH. BIENAVENTURADOS los perfectos", "ALEPH. Bienaventurados los perfectos"),
    ("Yo soy JEHOVÁ;", "Yo soy JEHOVÁ;"),  # capitals that do not flow into running text stay
    ("Y escribe al ángel de la iglesia en SARDIS: El que", "Y escribe al ángel de la iglesia en SARDIS: El que"),
])
def test_undo_drop_caps(verse: str, expected: str) -> None:
    casing = word_casing(["Jehová dijo a David: en siete años de su pastor y los perfectos"])
    assert undo_drop_caps(verse, casing) == expected


def _verses(chapters: dict[tuple[str, int], list[str]]) -> list[tuple[str, int, int, str]]:
    return [(book, chapter, i, text) for (book, chapter), texts in chapters.items()
            for i, text in enumerate(texts, 1)]


def test_a_chapter_numbered_one_verse_off_is_found_and_left_out() -> None:
    lengths = [12, 80, 30, 150, 25, 90, 40, 200, 18, 60]
    english = {("Aa", 1): ["e" * n for n in lengths], ("Aa", 2): ["e" * n for n in lengths]}
    spanish = {("Aa", 1): ["s" * n for n in lengths],
               ("Aa", 2): ["s" * 70] + ["s" * n for n in lengths[:-1]]}  # the Spanish 2:2 is English 2:1 ...
    english_verses, spanish_verses = _verses(english), _verses(spanish)
    assert misnumbered_chapters(english_verses, spanish_verses) == {("Aa", 2)}
    pairs = aligned_verse_pairs(english_verses, spanish_verses)
    assert [key for key, _, _ in pairs] == [("Aa", 1, v) for v in range(1, 11)]


def test_empty_verse_and_the_one_before_it_are_left_out() -> None:
    lengths = [40, 55, 30, 70, 45, 60]
    english = _verses({("Aa", 1): ["e" * n for n in lengths]})
    spanish = _verses({("Aa", 1): ["s" * n for n in lengths[:3]] + ["s" * 115, "", "s" * 60]})  # 5 merged into 4
    pairs = aligned_verse_pairs(english, spanish)
    assert [key[2] for key, _, _ in pairs] == [1, 2, 3, 6]


# ---------------------------------------------------------------- the real asset


@pytest.fixture(scope="module")
def bible() -> ParallelData:
    """The catalog data set, fetched once into $TRANSFORMERKIT_HOME (a Debian registry is needed the first time)."""
    return load_bible_en_es()


def _pair(data: ParallelData, ref: str) -> tuple[str, tuple[str, str]]:
    for split, refs in data.refs.items():
        if ref in refs:
            return split, data.splits[split][refs.index(ref)]
    raise KeyError(ref)


def test_bible_known_verses(bible: ParallelData) -> None:
    assert _pair(bible, "Gen 1:1") == ("train", ("In the beginning God created the heaven and the earth.",
                                                 "En el principio crió Dios los cielos y la tierra."))
    split, (english, spanish) = _pair(bible, "John 3:16")
    assert english.startswith("For God so loved the world, that he gave his only begotten Son")
    assert spanish.startswith("Porque de tal manera amó Dios al mundo")
    assert bible.refs["train"][-1] == "Rev 22:21"
    assert bible.train[-1] == ("The grace of our Lord Jesus Christ be with you all. Amen.",
                               "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén.")
    # The KJV's psalm titles are kept, as the Spanish prints them in the verse.
    assert _pair(bible, "Ps 23:1")[1] == ("A Psalm of David. The LORD is my shepherd; I shall not want.",
                                          "Salmo de David. Jehová es mi pastor; nada me faltará.")


def test_bible_counts_and_splits(bible: ParallelData) -> None:
    assert (len(bible.train), len(bible.valid), len(bible.test)) == (28_214, 1_429, 1_221)
    assert bible.summary()["test"]["pairs"] == 1_221 and "en words" in bible.summary()["train"]
    books = {split: {ref.split()[0] for ref in refs} for split, refs in bible.refs.items()}
    assert books["test"] == set(TEST_BOOKS) and books["valid"] == set(VALID_BOOKS)
    assert not books["train"] & (books["test"] | books["valid"])
    assert len(books["train"]) == 66 - len(TEST_BOOKS) - len(VALID_BOOKS)
    # Every verse of a held-out book is kept: none was misnumbered or empty.
    verses = {b.osis_id: sum(b.chapter_verses) for b in KJV_BOOKS}
    for split in ("valid", "test"):
        per_book = Counter(ref.split()[0] for ref in bible.refs[split])
        assert per_book == {book: verses[book] for book in books[split]}
    assert all(source and target for split in bible.splits.values() for source, target in split)
    assert not any("¶" in source or "<" in source or "<" in target for source, target in bible.train)


def test_bible_left_out_chapters_are_the_documented_ones() -> None:
    from transformerkit.assets import fetch

    verses = read_bible(fetch("bible-en-es"))
    assert len(verses["en"]) == len(verses["es"]) == 31_102
    assert sum(1 for *_, text in verses["es"] if not text) == 18
    assert misnumbered_chapters(verses["en"], verses["es"]) == {
        ("Num", 13), ("Num", 30), ("1Sam", 24), ("1Chr", 21), ("2Chr", 33), ("Job", 39), ("Job", 40),
        ("Hos", 12), ("Jonah", 2), ("2Cor", 13)}


def test_bible_directions(bible: ParallelData) -> None:
    reverse = load_parallel("bible-es-en")
    assert (reverse.source_lang, reverse.target_lang, reverse.name) == ("es", "en", "bible-es-en")
    assert reverse.test == [(target, source) for source, target in bible.test]
    with pytest.raises(ConfigError, match="'en'.*'es'"):
        load_bible_en_es("en", "fr")


# ---------------------------------------------------------------- user TSV files


def test_tsv_file_is_split_80_10_10_and_seeded(tmp_path: Path) -> None:
    lines = [f"sentence {i}\tfrase {i}" for i in range(100)] + ["sentence 7\totra frase 7", ""]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = load_parallel(path, seed=3)
    assert (data.source_lang, data.target_lang) == ("source", "target")
    assert len(data.train) + len(data.valid) + len(data.test) == 101
    assert abs(len(data.train) - 81) <= 1 and abs(len(data.valid) - 10) <= 1
    assert data.splits == load_parallel(path, seed=3).splits != load_parallel(path, seed=4).splits
    copies = [split for split, pairs in data.splits.items() for source, _ in pairs if source == "sentence 7"]
    assert len(copies) == 2 and len(set(copies)) == 1  # one source sentence never in two splits
    assert ("sentence 0", "frase 0") in data.train + data.valid + data.test


@pytest.mark.parametrize("content, message", [
    ("hello\thola\njust one side\n", r"line 2: 0 tabs.*exactly one tab"),
    ("a\tb\tc\n", r"line 1: 2 tabs"),
    ("hello\thola\n \tvacío\n", r"line 2: the source \(before the tab\) is empty"),
    ("hello\t  \n", r"line 1: the target \(after the tab\) is empty"),
    ("\n\n", "is empty"),
])
def test_malformed_tsv_is_a_data_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_parallel(path)
    assert str(path) in str(info.value)


def test_tsv_must_be_utf8_and_exist(tmp_path: Path) -> None:
    path = tmp_path / "latin1.tsv"
    path.write_bytes("niño\tchild\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*iconv"):
        load_parallel(path)
    with pytest.raises(DataError, match="neither a known parallel data set.*bible-en-es"):
        load_parallel(tmp_path / "missing.tsv")


def test_cli_data_show_prints_the_split_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"s{i}\tt{i}\n" for i in range(20)), encoding="utf-8")
    assert main(["data", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "source -> target" in out and "pairs" in out and "20" in out.splitlines()[2]
    assert main(["data", "show", "no-such-data"]) == 1
    assert "bible-en-es" in capsys.readouterr().err


# ---------------------------------------------------------------- the joint tokenizer

SPANISH = [
    ("In the beginning God created the heaven and the earth.", "En el principio crió Dios los cielos y la tierra."),
    ("Who is he? O Lord, tomorrow: the day.", "¿Quién es él? ¡Oh, Señor! mañana: el día, acción, árbol, útil."),
    ("The children of Israel did evil.", "Y los hijos de Israel hicieron lo malo á los ojos de Jehová."),
] * 10


def test_joint_tokenizer_round_trips_spanish(tmp_path: Path) -> None:
    tok = train_joint_tokenizer(SPANISH, 300)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.vocab_size <= 300
    for text in ("¿Quién es él? ¡Oh, Señor!", "En el principio crió Dios los cielos y la tierra.",
                 "The earth, mañana: acción útil.", "ñ á é í ó ú ¿ ¡", "a  double space"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.unk_token_id not in ids and tok.bos_token_id not in ids  # encode adds no special token
    assert all(tok.backend.token_to_id(ch) is not None for ch in "ñáéíóú¿¡")  # one symbol each, not two bytes
    assert tok.encode("Ω")[-1] == tok.unk_token_id  # never seen in training
    assert tok.encode("mañana") == tok.encode("man\u0303ana")  # NFC: decomposed ñ is the same token

    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    text = SPANISH[1][1]
    assert loaded.encode(text) == tok.encode(text) and loaded.decode(loaded.encode(text)) == text
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token) == ("<pad>", "<s>", "</s>", "<unk>")


def test_joint_tokenizer_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="vocab_size=4 is too small"):
        train_joint_tokenizer(SPANISH, 4)
    with pytest.raises(DataError, match="No text"):
        train_joint_tokenizer([(" ", "")], 100)
