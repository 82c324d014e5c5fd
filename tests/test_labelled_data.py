"""Labelled data sets (BBC News, tweet sentiment, WNUT NER, user files), their splits, and the metrics."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from transformerkit.data.labelled import (
    LOADERS,
    ClassificationData,
    TaggingData,
    entity_types_of,
    load_bbc_news,
    load_labelled,
    load_tweets_sentiment,
    load_wnut_ner,
    split_indices,
    text_key,
)
from transformerkit.errors import DataError
from transformerkit.metrics import accuracy, entity_f1, macro_f1

# Split sizes for seed 0, as printed in docs/data.md.
SIZES = {
    "bbc-news": (1781, 221, 223),
    "tweets-sentiment": (29748, 3719, 3718),
    "wnut-ner": (1915, 240, 239),
}


@pytest.fixture(scope="module")
def datasets() -> dict[str, ClassificationData | TaggingData]:
    return {name: loader(0) for name, loader in LOADERS.items()}


def all_examples(data: ClassificationData | TaggingData) -> list:
    return data.train + data.valid + data.test


def key_of(example: tuple) -> object:
    """What must not occur in two splits: the text, or the token sequence."""
    return text_key(example[0]) if isinstance(example[0], str) else tuple(example[0])


# ---------------------------------------------------------------- the catalog data sets


def test_bbc_news_has_all_articles_in_five_classes(datasets) -> None:
    data = datasets["bbc-news"]
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(all_examples(data)) == 2225
    per_class = Counter(data.labels[label] for _, label in all_examples(data))
    assert per_class == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


def test_bbc_news_reads_the_windows_1252_file(datasets) -> None:
    mutu = [text for text, _ in all_examples(datasets["bbc-news"]) if text.startswith("Chelsea sack Mutu")]
    assert len(mutu) == 1 and "a £15.8m signing" in mutu[0]


def test_tweets_are_cleaned_and_deduplicated(datasets) -> None:
    data = datasets["tweets-sentiment"]
    assert data.labels == ["negative", "neutral", "positive"]
    examples = all_examples(data)
    assert len(examples) == 37185  # 38,158 rows - 609 with conflicting copies - 364 repeated copies
    assert Counter(data.labels[label] for _, label in examples) == {
        "negative": 15954, "neutral": 14424, "positive": 6807}
    keys = [text_key(text) for text, _ in examples]
    assert all(keys) and len(set(keys)) == len(keys)
    assert not any("\r" in text for text, _ in examples)


def test_wnut_has_all_sentences_and_ten_entity_types(datasets) -> None:
    data = datasets["wnut-ner"]
    assert len(all_examples(data)) == 2394
    assert len(data.entity_types) == 10 and "person" in data.entity_types
    assert data.labels[:3] == ["O", "B-company", "I-company"] and len(data.labels) == 21
    assert all(len(tokens) == len(tags) > 0 for tokens, tags in all_examples(data))
    assert sum(data.summary()[split]["person"] for split in ("train", "valid", "test")) == 449


@pytest.mark.parametrize("name", list(SIZES))
def test_splits_are_80_10_10_disjoint_and_documented(datasets, name: str) -> None:
    data = datasets[name]
    sizes = tuple(len(split) for split in (data.train, data.valid, data.test))
    assert sizes == SIZES[name]
    total = sum(sizes)
    assert abs(sizes[0] - 0.8 * total) <= 3 and abs(sizes[1] - 0.1 * total) <= 3
    keys = [{key_of(example) for example in split} for split in (data.train, data.valid, data.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert data.summary()["test"]["examples"] == sizes[2]


@pytest.mark.parametrize("name", ["bbc-news", "tweets-sentiment"])
def test_classification_splits_are_stratified(datasets, name: str) -> None:
    data = datasets[name]
    whole = Counter(label for _, label in all_examples(data))
    n = sum(whole.values())
    for split in (data.train, data.valid, data.test):
        counts = Counter(label for _, label in split)
        for label, count in whole.items():
            assert abs(counts[label] / len(split) - count / n) < 0.01, (name, data.labels[label])


@pytest.mark.parametrize("name", list(SIZES))
def test_same_seed_same_splits_other_seed_other_splits(datasets, name: str) -> None:
    data = datasets[name]
    again, other = LOADERS[name](0), LOADERS[name](1)
    assert again == data
    assert other.train != data.train and other.labels == data.labels
    # Another seed deals out the same examples: the splits cover the whole data set.
    as_hashable = lambda examples: Counter((key_of(e), str(e[1])) for e in examples)  # noqa: E731
    assert as_hashable(all_examples(other)) == as_hashable(all_examples(data))


def test_split_indices_keeps_copies_together_and_covers_everything() -> None:
    keys = [i // 2 for i in range(40)] + list(range(100, 160))  # 20 pairs, then 60 singles
    strata = ["a"] * 50 + ["b"] * 50
    train, valid, test = split_indices(keys, strata, seed=3)
    assert sorted(train + valid + test) == list(range(100))
    where = {i: s for s, split in enumerate((train, valid, test)) for i in split}
    assert all(where[2 * k] == where[2 * k + 1] for k in range(20))
    # A pair can overshoot a split's share by one.
    assert abs(len(train) - 80) <= 1 and abs(len(valid) - 10) <= 1 and abs(len(test) - 10) <= 1
    assert abs(sum(strata[i] == "a" for i in test) - 5) <= 1
    assert split_indices(keys, strata, seed=3) == (train, valid, test)


def test_entity_types_of_counts_spans() -> None:
    assert entity_types_of(["B-a", "I-a", "O", "I-b", "B-b", "B-b", "I-a"]) == ["a", "b", "b", "b", "a"]


# ---------------------------------------------------------------- user files


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_csv_tsv_and_jsonl(tmp_path: Path) -> None:
    rows = [(f"text number {i}, with a comma", "pos" if i % 4 else "neg") for i in range(40)]
    csv_file = write_lines(tmp_path / "d.csv", ["id,text,label"] + [f'{i},"{t}",{y}' for i, (t, y) in enumerate(rows)])
    tsv_file = write_lines(tmp_path / "d.tsv", ["label\ttext"] + [f"{y}\t{t}" for t, y in rows])
    jsonl_file = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": t, "label": y}) for t, y in rows])
    loaded = [load_labelled(path, seed=5) for path in (csv_file, tsv_file, jsonl_file)]
    for data in loaded:
        assert isinstance(data, ClassificationData) and data.labels == ["neg", "pos"]
        assert (len(data.train), len(data.valid), len(data.test)) == (32, 4, 4)
        assert data.summary()["test"] == {"examples": 4, "neg": 1, "pos": 3}
        assert sorted(all_examples(data)) == sorted((t, int(y == "pos")) for t, y in rows)
    assert loaded[0].splits == loaded[1].splits == loaded[2].splits  # same rows, same seed: same splits


def test_user_labels_sort_numerically(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": f"t{i}", "label": i % 11}) for i in range(44)])
    assert load_labelled(path).labels == [str(i) for i in range(11)]


def test_user_conll_file(tmp_path: Path) -> None:
    sentences = [[("Paris", "B-loc"), ("is", "O"), (f"nice{i}", "O")] for i in range(10)]
    sentences += [[("Ada", "B-per"), ("Lovelace", "I-per"), (str(i), "O")] for i in range(10)]
    lines = [line for s in sentences for line in [f"{w}\t{t}" for w, t in s] + [""]]
    data = load_labelled(write_lines(tmp_path / "d.conll", lines))
    assert isinstance(data, TaggingData)
    assert data.labels == ["O", "B-loc", "I-loc", "B-per", "I-per"]
    assert (len(data.train), len(data.valid), len(data.test)) == (16, 2, 2)
    assert (["Ada", "Lovelace", "7"], [3, 4, 0]) in all_examples(data)


# ---------------------------------------------------------------- errors


def error_for(path_or_name: str | Path) -> str:
    with pytest.raises(DataError) as info:
        load_labelled(path_or_name)
    return str(info.value)


def test_names_dispatch_to_the_loaders() -> None:
    assert LOADERS == {"bbc-news": load_bbc_news, "tweets-sentiment": load_tweets_sentiment, "wnut-ner": load_wnut_ner}


def test_unknown_name_lists_the_known_data_sets() -> None:
    message = error_for("imdb")
    assert "'imdb'" in message and all(name in message for name in LOADERS)


@pytest.mark.parametrize(
    ("name", "lines", "expected"),
    [
        ("cols.csv", ["text,category", "hello,a"], "no column 'label'"),
        ("cols.jsonl", ['{"text": "hello"}'], "line 1: no 'label'"),
        ("header.csv", ["text,label"], "no examples"),
        ("nolabel.csv", ["text,label", "fine,a", "lost,"], "line 3: the 'label' is empty"),
        ("null.jsonl", ['{"text": "a", "label": "x"}', '{"text": "b", "label": null}'], "line 2: the 'label' is empty"),
        ("notext.csv", ["text,label", "  ,a"], "line 2: the 'text' is empty"),
        ("bad.jsonl", ['{"text": "a", "label": "x"}', "{oops"], "line 2: not valid JSON"),
        ("bad.conll", ["Paris\tB-loc", "", "is", "nice\tO"], "line 3: 'is' is not 'token<TAB>tag'"),
        ("badtag.txt", ["Paris\tB-loc", "nice\tLOC"], "line 2: the tag 'LOC' is not BIO"),
        ("d.xlsx", ["text,label"], "suffix '.xlsx'"),
    ],
)
def test_bad_files_say_what_and_where(tmp_path: Path, name: str, lines: list[str], expected: str) -> None:
    message = error_for(write_lines(tmp_path / name, lines))
    assert expected in message and name in message


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.conll"])
def test_empty_files(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("\n \n")
    assert "is empty" in error_for(tmp_path / name)


def test_non_utf8_user_file(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    assert "not UTF-8" in error_for(tmp_path / "latin.csv")


# ---------------------------------------------------------------- metrics


def test_accuracy_and_macro_f1_by_hand() -> None:
    predictions, references = [0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0]
    assert accuracy(predictions, references) == pytest.approx(4 / 6)
    # class 0: tp 1, fn 1 -> 2/3; class 1: tp 1, fp 1 -> 2/3; class 2: tp 2, fp 1, fn 1 -> 2/3; class 3 absent
    assert macro_f1(predictions, references, num_labels=4) == pytest.approx(2 / 3)
    # A model that always says the majority class: accuracy 0.8, macro-F1 (8/9 + 0) / 2
    assert accuracy([0] * 5, [0, 0, 0, 0, 1]) == 0.8
    assert macro_f1([0] * 5, [0, 0, 0, 0, 1], num_labels=2) == pytest.approx(4 / 9)


@pytest.mark.parametrize("metric", [accuracy, lambda p, r: macro_f1(p, r, 3)])
def test_class_metrics_refuse_mismatched_input(metric) -> None:
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        metric([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="no predictions"):
        metric([], [])


def test_macro_f1_refuses_ids_outside_the_labels() -> None:
    with pytest.raises(ValueError, match=r"\[3\] are outside 0..2"):
        macro_f1([0, 3], [0, 1], num_labels=3)


def test_entity_f1_counts_a_partial_entity_as_wrong() -> None:
    true = [["B-per", "I-per", "O", "O", "O", "O", "O", "O", "O", "B-loc"]]
    pred = [["B-per", "O", "O", "O", "O", "O", "O", "O", "O", "B-loc"]]
    token_accuracy = sum(t == p for t, p in zip(true[0], pred[0])) / len(true[0])
    scores = entity_f1(true, pred)
    assert token_accuracy == 0.9
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.5, 0.5, 0.5)
    assert scores["per_type"]["loc"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["per"]["f1"] == 0.0


def test_entity_f1_by_hand_with_ids() -> None:
    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    true = [[1, 2, 0, 3], [0, 3, 4]]  # entities: a, b | b
    pred = [[1, 2, 0, 1], [0, 3, 4]]  # entities: a, a | b  -> 2 right of 3 predicted, 3 true
    scores = entity_f1(true, pred, labels=labels)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["per_type"]["b"]["recall"] == 0.5 and scores["per_type"]["a"]["precision"] == 0.5
    assert entity_f1([["O"]], [["O"]])["f1"] == 0.0


def test_entity_f1_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="1 true and 2 predicted sequences"):
        entity_f1([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="Sentence 1: 2 true tags but 1 predicted"):
        entity_f1([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="no labels"):
        entity_f1([[0]], [[0]])
