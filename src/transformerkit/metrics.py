"""Evaluation metrics: accuracy and macro-F1 for classification, entity-level F1 for BIO tagging.

``accuracy`` and ``macro_f1`` take ``(predictions, references)`` of class ids;
``entity_f1`` follows seqeval's order ``(true, predicted)`` of tag sequences. Each raises
a ValueError when the two sides do not line up, instead of scoring a silent prefix.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """The fraction of predictions equal to their reference."""
    predicted, true = _paired_ids(predictions, references)
    return sum(p == t for p, t in zip(predicted, true)) / len(true)


def macro_f1(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> float:
    """The unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

    Every class counts the same however rare, so it shows a model that ignores a small class
    (accuracy does not). A class that is neither predicted nor in the references has no
    defined F1 and is left out of the mean, as scikit-learn does when not given ``labels``.
    """
    predicted, true = _paired_ids(predictions, references)
    outside = sorted({i for i in (*predicted, *true) if not 0 <= i < num_labels})
    if outside:
        raise ValueError(f"Class ids {outside[:5]} are outside 0..{num_labels - 1} (num_labels={num_labels}).")
    tp, fp, fn = [0] * num_labels, [0] * num_labels, [0] * num_labels
    for p, t in zip(predicted, true):
        if p == t:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    scores = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in range(num_labels) if tp[c] + fp[c] + fn[c]]
    return sum(scores) / len(scores)


def entity_f1(
    true_tag_seqs: Sequence[Sequence[str | int]],
    pred_tag_seqs: Sequence[Sequence[str | int]],
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of BIO tag sequences, overall (micro) and per type.

    An entity counts as found only if its type and both ends match exactly: a partly
    tagged entity is a miss and a false positive, however many of its tokens are right.
    Scored with ``seqeval`` in its default, conlleval-compatible mode (an ``I-x`` after
    ``O`` starts an entity). Tags are strings, or ids into ``labels`` (e.g. ``TaggingData.labels``).

    Returns ``{"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1", "support"}}}``
    (all 0.0 when neither side has an entity).
    """
    from seqeval.metrics import classification_report  # imports scikit-learn: only when needed

    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(
            f"entity_f1 got {len(true_tag_seqs)} true and {len(pred_tag_seqs)} predicted sequences; "
            "pass one prediction per sentence."
        )
    if not true_tag_seqs:
        raise ValueError("entity_f1 got no sequences to score.")
    true = [_tag_names(seq, labels) for seq in true_tag_seqs]
    pred = [_tag_names(seq, labels) for seq in pred_tag_seqs]
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"Sentence {i}: {len(t)} true tags but {len(p)} predicted; predict one tag per token.")
    with warnings.catch_warnings():  # numpy warns about the empty mean when there are no entities at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(true, pred, output_dict=True, zero_division=0)
    overall = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        name: {"precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]),
               "support": int(r["support"])}
        for name, r in report.items()
        if not name.endswith(" avg")
    }
    return {"precision": float(overall["precision"]), "recall": float(overall["recall"]),
            "f1": float(overall["f1-score"]), "per_type": per_type}


def _tag_names(tags: Sequence[str | int], labels: Sequence[str] | None) -> list[str]:
    """Tags as strings: ids are looked up in ``labels``."""
    values = tags.tolist() if hasattr(tags, "tolist") else list(tags)
    if labels is None:
        if not all(isinstance(tag, str) for tag in values):
            raise ValueError("entity_f1 got tag ids but no labels: pass labels=TaggingData.labels, or tag strings.")
        return values
    return [labels[tag] if isinstance(tag, int) else tag for tag in values]


def _paired_ids(predictions: Sequence[int], references: Sequence[int]) -> tuple[list[int], list[int]]:
    """Both sides as lists of ints (tensors and arrays too), checked to be non-empty and of equal length."""
    predicted, true = ([int(x) for x in (v.tolist() if hasattr(v, "tolist") else v)] for v in (predictions, references))
    if len(predicted) != len(true):
        raise ValueError(f"Got {len(predicted)} predictions for {len(true)} references; they must pair up one to one.")
    if not true:
        raise ValueError("Got no predictions to score.")
    return predicted, true
