"""Entity-level NER scores on word-level BIO tags, offline: seqeval's `classification_report` in two modes.

- "lenient": seqeval's default (conlleval-like); an I- tag that opens an entity starts one. Every published
  Twitter-2015/2017 score uses it.
- "strict": IOB2 strict mode; an entity must open with B-, so an orphan I- tag is no entity.

Results are flat, in the key style of seqeval metrics on the Hub: `overall_precision`, `overall_recall`,
`overall_f1`, `overall_accuracy`, and per type `{"precision", "recall", "f1", "number"}`; plus
`overall_number`, the number of gold entities. Values are Python floats and ints (they go to JSON).
"""

import operator
import warnings
from collections.abc import Sequence

from seqeval.metrics import accuracy_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.reporters import StringReporter
from seqeval.scheme import IOB2, Entities

from processing.corpus.labels import ID_TO_LABEL

MODES = ("lenient", "strict")
# `classification_report` options per mode.
_SEQEVAL_OPTIONS = {"lenient": {}, "strict": {"mode": "strict", "scheme": IOB2}}
# Rows of seqeval's report that are averages, not entity types.
_AVERAGE_ROWS = ("micro avg", "macro avg", "weighted avg")

# (entity type, first word, one past the last word)
EntitySpan = tuple[str, int, int]


def as_tag_names(sequences: Sequence[Sequence[str | int]], role: str = "tag") -> list[list[str]]:
    """Tag names of every sequence; ids index `LABEL_NAMES`. Malformed tags raise `ValueError`."""
    named = []
    for sequence_index, sequence in enumerate(sequences):
        tags = []
        for position, tag in enumerate(sequence):
            where = f"{role} sequence {sequence_index}, position {position}"
            if not isinstance(tag, str):
                try:
                    tag = ID_TO_LABEL[operator.index(tag)]
                except (KeyError, TypeError):
                    raise ValueError(
                        f"{where}: {tag!r} is no tag id (drop -100 padding positions before scoring)"
                    ) from None
            elif tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) == 2):
                raise ValueError(f"{where}: {tag!r} is not O, B-<type> or I-<type>")
            elif tag[2:] in _AVERAGE_ROWS or tag[2:].startswith("overall_"):
                raise ValueError(f"{where}: {tag!r} names a type that would collide with a result key")
            tags.append(tag)
        named.append(tags)
    return named


def entity_spans(tags: Sequence[str], mode: str = "lenient") -> set[EntitySpan]:
    """The entities of one tag sequence as (type, start, end) word spans, `end` exclusive."""
    if mode == "lenient":
        return {(entity_type, start, end + 1) for entity_type, start, end in get_entities(list(tags))}
    if mode == "strict":
        return {(entity.tag, entity.start, entity.end) for entity in Entities([list(tags)], IOB2).entities[0]}
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _seqeval_scores(gold_tags: list[list[str]], pred_tags: list[list[str]], mode: str) -> dict:
    """seqeval's report of valid tag sequences as flat scores: one row per type, then the micro average."""
    if not gold_tags:
        # seqeval refuses zero sequences; one empty sequence holds the same (no) entities.
        gold_tags, pred_tags = [[]], [[]]
    with warnings.catch_warnings():
        # With no entity at all, seqeval's macro average (discarded below) is a mean of nothing.
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(
            gold_tags, pred_tags, output_dict=True, zero_division=0, **_SEQEVAL_OPTIONS[mode]
        )
    scores: dict[str, float | int | dict] = {
        entity_type: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "number": int(row["support"]),
        }
        for entity_type, row in sorted(report.items())
        if entity_type not in _AVERAGE_ROWS
    }
    micro = report["micro avg"]
    scores["overall_precision"] = float(micro["precision"])
    scores["overall_recall"] = float(micro["recall"])
    scores["overall_f1"] = float(micro["f1-score"])
    scores["overall_number"] = int(micro["support"])
    return scores


def _spans_as_tags(spans: set[EntitySpan], length: int, where: str) -> list[str]:
    """IOB2 tags whose strict reading is exactly `spans`; overlapping spans raise `ValueError`."""
    tags = ["O"] * length
    for entity_type, start, end in sorted(spans, key=lambda span: span[1:]):
        if not 0 <= start < end or any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"{where}: span {(entity_type, start, end)} is empty or overlaps another")
        tags[start:end] = [f"B-{entity_type}"] + [f"I-{entity_type}"] * (end - start - 1)
    return tags


def score_entity_spans(
    gold_spans: Sequence[set[EntitySpan]], pred_spans: Sequence[set[EntitySpan]]
) -> dict[str, float | int | dict]:
    """Micro-averaged and per-type precision, recall and F1 of predicted entity sets against gold ones.

    One set per sequence, spans of one set not overlapping; an entity counts as correct only with the same
    type and the same span. Types appear when they occur in gold or predictions; no accuracy key.
    """
    if len(gold_spans) != len(pred_spans):
        raise ValueError(f"{len(gold_spans)} gold sequences but {len(pred_spans)} predicted ones")
    # seqeval scores tag sequences only: each span set is written as IOB2 tags, which strict mode reads back
    # to exactly these spans, so that seqeval does the counting here too.
    gold_tags, pred_tags = [], []
    for index, (gold, pred) in enumerate(zip(gold_spans, pred_spans, strict=True)):
        length = max((end for _, _, end in gold | pred), default=0)
        gold_tags.append(_spans_as_tags(gold, length, f"gold sequence {index}"))
        pred_tags.append(_spans_as_tags(pred, length, f"predicted sequence {index}"))
    return _seqeval_scores(gold_tags, pred_tags, "strict")


def ner_metrics(
    gold: Sequence[Sequence[str | int]], pred: Sequence[Sequence[str | int]], mode: str = "lenient"
) -> dict[str, float | int | dict]:
    """Entity-level scores of predicted word-level tag sequences against gold ones.

    Tags are names ("B-PER") or ids into `LABEL_NAMES`; every predicted sequence must have the length of
    its gold sequence. Returns the flat keys of the module docstring; types appear when they occur in gold
    or predictions, and scores with nothing to divide by are 0.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted ones")
    gold_tags, pred_tags = as_tag_names(gold, "gold"), as_tag_names(pred, "predicted")
    for index, (gold_sequence, pred_sequence) in enumerate(zip(gold_tags, pred_tags, strict=True)):
        if len(gold_sequence) != len(pred_sequence):
            raise ValueError(
                f"sequence {index}: {len(gold_sequence)} gold tags but {len(pred_sequence)} predicted"
            )
    scores = _seqeval_scores(gold_tags, pred_tags, mode)
    # seqeval's accuracy divides by the number of tags, which may be 0.
    has_tags = any(gold_tags)
    scores["overall_accuracy"] = float(accuracy_score(gold_tags, pred_tags)) if has_tags else 0.0
    return scores


def format_metrics_table(metrics: dict, title: str | None = None, digits: int = 2) -> str:
    """A plain-text table of `ner_metrics` output for logs, laid out by seqeval's reporter: scores in
    percent, one row per type, then the overall (micro-averaged) row and the token accuracy."""
    types = [key for key, value in metrics.items() if isinstance(value, dict)]
    reporter = StringReporter(width=max([len("overall"), *(len(t) for t in types)]), digits=digits)
    for entity_type in types:
        row = metrics[entity_type]
        reporter.write(
            entity_type, 100 * row["precision"], 100 * row["recall"], 100 * row["f1"], row["number"]
        )
    if types:
        reporter.write_blank()
    reporter.write(
        "overall",
        100 * metrics["overall_precision"],
        100 * metrics["overall_recall"],
        100 * metrics["overall_f1"],
        metrics.get("overall_number", sum(metrics[t]["number"] for t in types)),
    )
    lines = [title] if title else []
    lines.append(reporter.report())
    if "overall_accuracy" in metrics:
        lines.append(f"token accuracy {100 * metrics['overall_accuracy']:.{digits}f}")
    return "\n".join(lines)


__all__ = [
    "MODES",
    "EntitySpan",
    "as_tag_names",
    "entity_spans",
    "format_metrics_table",
    "ner_metrics",
    "score_entity_spans",
]
