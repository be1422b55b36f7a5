"""Entity-level NER scores on word-level BIO tags, offline, built on seqeval's entity readers.

Two modes:
- "lenient": seqeval's default (conlleval-like); an I- tag that opens an entity starts one. Every published
  Twitter-2015/2017 score uses it.
- "strict": IOB2 strict mode; an entity must open with B-, so an orphan I- tag is no entity.

The result has the flat keys of the `evaluate` seqeval metric: `overall_precision`, `overall_recall`,
`overall_f1`, `overall_accuracy`, and per type `{"precision", "recall", "f1", "number"}`; plus
`overall_number`, the number of gold entities.
"""

import operator
from collections import Counter
from collections.abc import Sequence

from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities

from processing.corpus.labels import ID_TO_LABEL

MODES = ("lenient", "strict")

# (entity type, first word, one past the last word)
EntitySpan = tuple[str, int, int]


def as_tag_names(sequences: Sequence[Sequence[str | int]], role: str = "tag") -> list[list[str]]:
    """Tag names of every sequence; ids index `LABEL_NAMES`. Malformed tags raise `ValueError`."""
    named = []
    for sequence_index, sequence in enumerate(sequences):
        tags = []
        for position, tag in enumerate(sequence):
            if not isinstance(tag, str):
                try:
                    tag = ID_TO_LABEL[operator.index(tag)]
                except (KeyError, TypeError):
                    raise ValueError(
                        f"{role} sequence {sequence_index}, position {position}: {tag!r} is no tag id "
                        "(drop -100 padding positions before scoring)"
                    ) from None
            elif tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) == 2):
                raise ValueError(
                    f"{role} sequence {sequence_index}, position {position}: {tag!r} is not O, B-<type> or I-<type>"
                )
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


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def score_entity_spans(
    gold_spans: Sequence[set[EntitySpan]], pred_spans: Sequence[set[EntitySpan]]
) -> dict[str, float | int | dict]:
    """Micro-averaged and per-type precision, recall and F1 of predicted entity sets against gold ones.

    One set per sequence; an entity counts as correct only with the same type and the same span.
    Types appear when they occur in gold or predictions, as in seqeval's report; no accuracy key.
    """
    if len(gold_spans) != len(pred_spans):
        raise ValueError(f"{len(gold_spans)} gold sequences but {len(pred_spans)} predicted ones")
    gold_count: Counter = Counter()
    pred_count: Counter = Counter()
    correct_count: Counter = Counter()
    for gold, pred in zip(gold_spans, pred_spans, strict=True):
        gold_count.update(span[0] for span in gold)
        pred_count.update(span[0] for span in pred)
        correct_count.update(span[0] for span in gold & pred)
    scores: dict[str, float | int | dict] = {}
    for entity_type in sorted(set(gold_count) | set(pred_count)):
        precision = _ratio(correct_count[entity_type], pred_count[entity_type])
        recall = _ratio(correct_count[entity_type], gold_count[entity_type])
        scores[entity_type] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "number": gold_count[entity_type],
        }
    precision = _ratio(sum(correct_count.values()), sum(pred_count.values()))
    recall = _ratio(sum(correct_count.values()), sum(gold_count.values()))
    scores["overall_precision"] = precision
    scores["overall_recall"] = recall
    scores["overall_f1"] = _f1(precision, recall)
    scores["overall_number"] = sum(gold_count.values())
    return scores


def ner_metrics(
    gold: Sequence[Sequence[str | int]], pred: Sequence[Sequence[str | int]], mode: str = "lenient"
) -> dict[str, float | int | dict]:
    """Entity-level scores of predicted word-level tag sequences against gold ones.

    Tags are names ("B-PER") or ids into `LABEL_NAMES`; every predicted sequence must have the length of
    its gold sequence. Returns the `evaluate` seqeval keys (see the module docstring) plus `overall_number`.
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
    scores = score_entity_spans(
        [entity_spans(tags, mode) for tags in gold_tags], [entity_spans(tags, mode) for tags in pred_tags]
    )
    correct_tags = sum(
        g == p
        for gold_sequence, pred_sequence in zip(gold_tags, pred_tags, strict=True)
        for g, p in zip(gold_sequence, pred_sequence, strict=True)
    )
    scores["overall_accuracy"] = _ratio(correct_tags, sum(len(sequence) for sequence in gold_tags))
    return scores


def format_metrics_table(metrics: dict, title: str | None = None, digits: int = 2) -> str:
    """A plain-text table of `ner_metrics` output for logs: scores in percent, one row per type."""
    types = [key for key, value in metrics.items() if isinstance(value, dict)]
    width = max(len("overall"), *(len(t) for t in types)) + 1
    header = f"{'type':<{width}}{'precision':>11}{'recall':>9}{'f1':>9}{'number':>9}"
    lines = [title, header] if title else [header]
    for entity_type in types:
        row = metrics[entity_type]
        lines.append(
            f"{entity_type:<{width}}{100 * row['precision']:>11.{digits}f}{100 * row['recall']:>9.{digits}f}"
            f"{100 * row['f1']:>9.{digits}f}{row['number']:>9d}"
        )
    total = metrics.get("overall_number", sum(metrics[t]["number"] for t in types))
    lines.append(
        f"{'overall':<{width}}{100 * metrics['overall_precision']:>11.{digits}f}{100 * metrics['overall_recall']:>9.{digits}f}"
        f"{100 * metrics['overall_f1']:>9.{digits}f}{total:>9d}"
    )
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
