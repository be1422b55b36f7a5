"""`ner_metrics` and `score_entity_spans`: hand-computed cases, lenient against strict, edge cases seqeval
handles on its own terms (no entities, types only predicted), agreement with seqeval's report and the table."""

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from processing.corpus.labels import LABEL_NAMES, LABEL_TO_ID
from processing.evaluation.metrics import (
    entity_spans,
    format_metrics_table,
    ner_metrics,
    score_entity_spans,
)


def test_hand_computed_scores_with_a_wrong_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O"]]
    scores = ner_metrics(gold, pred)
    # gold: PER, LOC, ORG; predicted: PER (right), ORG (wrong span type) -> 1 correct of 2 predicted, 3 gold
    assert scores["overall_precision"] == pytest.approx(1 / 2)
    assert scores["overall_recall"] == pytest.approx(1 / 3)
    assert scores["overall_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert scores["overall_accuracy"] == pytest.approx(4 / 6)
    assert scores["overall_number"] == 3
    assert scores["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert scores["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert scores["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert "MISC" not in scores


def test_a_partial_span_is_wrong():
    scores = ner_metrics([["B-ORG", "I-ORG", "I-ORG"]], [["B-ORG", "I-ORG", "O"]])
    assert (scores["overall_precision"], scores["overall_recall"]) == (0.0, 0.0)


def test_lenient_and_strict_differ_on_an_orphan_inside_tag():
    gold = [["O", "I-PER", "I-PER", "O", "B-LOC"]]
    # Lenient: the orphan I-PER opens a PER entity; strict IOB2: it is no entity at all.
    assert entity_spans(gold[0], "lenient") == {("PER", 1, 3), ("LOC", 4, 5)}
    assert entity_spans(gold[0], "strict") == {("LOC", 4, 5)}
    pred = [["O", "B-PER", "I-PER", "O", "B-LOC"]]
    lenient = ner_metrics(gold, pred, mode="lenient")
    strict = ner_metrics(gold, pred, mode="strict")
    assert lenient["overall_f1"] == 1.0
    assert lenient["overall_number"] == 2
    # Strict: gold has only LOC, the prediction adds a PER -> precision 1/2, recall 1.
    assert strict["overall_precision"] == 0.5
    assert strict["overall_recall"] == 1.0
    assert strict["overall_number"] == 1
    assert strict["PER"]["number"] == 0


def test_lenient_opens_an_entity_at_a_type_change_and_strict_does_not():
    tags = ["B-PER", "I-LOC", "I-LOC"]
    assert entity_spans(tags, "lenient") == {("PER", 0, 1), ("LOC", 1, 3)}
    assert entity_spans(tags, "strict") == {("PER", 0, 1)}


def test_label_ids_score_like_tag_names():
    gold = [["B-PER", "I-PER", "O"], ["B-MISC"]]
    pred = [["B-PER", "O", "O"], ["B-MISC"]]
    as_ids = ner_metrics(
        [[LABEL_TO_ID[t] for t in s] for s in gold], [[LABEL_TO_ID[t] for t in s] for s in pred]
    )
    assert as_ids == ner_metrics(gold, pred)


@pytest.mark.parametrize(
    ("gold", "pred", "message"),
    [
        ([["O"]], [["O"], ["O"]], "1 gold sequences but 2 predicted"),
        ([["O", "O"]], [["O"]], "sequence 0: 2 gold tags but 1 predicted"),
        ([["O", "PER"]], [["O", "O"]], "gold sequence 0, position 1: 'PER'"),
        ([["O"]], [["B-"]], "predicted sequence 0, position 0: 'B-'"),
        ([[0, -100]], [[0, 0]], "drop -100 padding"),
    ],
)
def test_malformed_input_names_the_sequence_and_position(gold, pred, message):
    with pytest.raises(ValueError, match=message):
        ner_metrics(gold, pred)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        ner_metrics([["O"]], [["O"]], mode="exact")


def test_no_entities_anywhere_gives_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seqeval's mean of no types must not leak a RuntimeWarning
        scores = ner_metrics([["O", "O"]], [["O", "O"]])
        assert scores == {
            "overall_precision": 0.0,
            "overall_recall": 0.0,
            "overall_f1": 0.0,
            "overall_number": 0,
            "overall_accuracy": 1.0,
        }
        # No sequences, or only empty ones: zeros as well (seqeval alone refuses zero sequences).
        for gold in ([], [[]]):
            empty = ner_metrics(gold, gold)
            assert empty["overall_f1"] == 0.0 and empty["overall_accuracy"] == 0.0


def test_a_type_only_predicted_is_listed_with_no_gold_and_only_gold_with_no_predictions():
    scores = ner_metrics([["B-PER", "O", "O"]], [["O", "B-LOC", "O"]])
    # Nothing predicted right: precision 0/1, recall 0/1; LOC has no gold, PER no prediction.
    assert scores["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 0}
    assert scores["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert scores["overall_number"] == 1
    only_predicted = ner_metrics([["O", "O"]], [["B-ORG", "I-ORG"]])
    assert only_predicted["overall_precision"] == 0.0 and only_predicted["overall_recall"] == 0.0
    assert only_predicted["ORG"]["number"] == 0 and only_predicted["overall_number"] == 0


def test_scores_are_python_numbers_for_json():
    scores = ner_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-LOC"]], mode="strict")
    assert type(scores["overall_f1"]) is float and type(scores["overall_number"]) is int
    assert type(scores["PER"]["precision"]) is float and type(scores["PER"]["number"]) is int
    assert json.loads(json.dumps(scores)) == scores


def test_a_type_named_like_a_result_key_is_refused():
    for tag in ("B-micro avg", "I-overall_f1"):
        with pytest.raises(ValueError, match=f"predicted sequence 0, position 1: '{tag}'"):
            ner_metrics([["O", "O"]], [["O", tag]])


def test_entity_span_sets_are_scored_by_hand_computed_counts():
    gold = [{("PER", 0, 2), ("LOC", 3, 4)}, {("ORG", 1, 2)}, set()]
    pred = [{("PER", 0, 2), ("LOC", 2, 4)}, {("ORG", 1, 2), ("MISC", 0, 1)}, {("PER", 5, 6)}]
    scores = score_entity_spans(gold, pred)
    # gold 3; predicted 5, of which PER (0, 2) and ORG (1, 2) are right: P 2/5, R 2/3.
    assert scores["overall_precision"] == pytest.approx(2 / 5)
    assert scores["overall_recall"] == pytest.approx(2 / 3)
    assert scores["overall_f1"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert scores["overall_number"] == 3
    assert scores["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "number": 1}
    assert scores["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert scores["MISC"]["number"] == 0 and "overall_accuracy" not in scores
    # Adjacent entities of one type stay two entities.
    adjacent = [{("PER", 0, 1), ("PER", 1, 3)}]
    assert score_entity_spans(adjacent, adjacent)["overall_number"] == 2
    assert score_entity_spans(adjacent, [{("PER", 0, 3)}])["overall_precision"] == 0.0


def test_overlapping_or_empty_spans_are_refused():
    with pytest.raises(ValueError, match="predicted sequence 0: span .* overlaps"):
        score_entity_spans([set()], [{("PER", 0, 2), ("LOC", 1, 3)}])
    with pytest.raises(ValueError, match="gold sequence 1: span"):
        score_entity_spans([set(), {("PER", 2, 2)}], [set(), set()])
    with pytest.raises(ValueError, match="1 gold sequences but 2 predicted"):
        score_entity_spans([set()], [set(), set()])


TAG_SEQUENCES = st.lists(
    st.lists(st.sampled_from(LABEL_NAMES), min_size=1, max_size=8), min_size=1, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_scores_agree_with_seqeval_classification_report(data):
    gold = data.draw(TAG_SEQUENCES)
    pred = [data.draw(st.lists(st.sampled_from(LABEL_NAMES), min_size=len(s), max_size=len(s))) for s in gold]
    for mode, options in (("lenient", {}), ("strict", {"mode": "strict", "scheme": IOB2})):
        scores = ner_metrics(gold, pred, mode=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns on empty averages
            report = classification_report(gold, pred, output_dict=True, zero_division=0, **options)
        micro = report.pop("micro avg")
        report.pop("macro avg")
        report.pop("weighted avg")
        assert scores["overall_precision"] == pytest.approx(micro["precision"])
        assert scores["overall_recall"] == pytest.approx(micro["recall"])
        assert scores["overall_f1"] == pytest.approx(micro["f1-score"])
        assert {key for key, value in scores.items() if isinstance(value, dict)} == set(report)
        for entity_type, row in report.items():
            assert scores[entity_type]["f1"] == pytest.approx(row["f1-score"])
            assert scores[entity_type]["number"] == row["support"]
        # The same scores from the entity sets, as `score_entity_spans` counts them.
        from_spans = score_entity_spans(
            [entity_spans(s, mode) for s in gold], [entity_spans(s, mode) for s in pred]
        )
        assert from_spans == {key: value for key, value in scores.items() if key != "overall_accuracy"}


def test_table_lists_every_type_and_the_overall_row_in_percent():
    scores = ner_metrics([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    table = format_metrics_table(scores, title="valid, lenient")
    lines = [line.split() for line in table.splitlines()]
    assert table.splitlines()[0] == "valid, lenient"
    assert lines[1:] == [
        ["precision", "recall", "f1-score", "support"],
        [],
        ["LOC", "0.00", "0.00", "0.00", "1"],
        ["PER", "100.00", "100.00", "100.00", "1"],
        [],
        ["overall", "100.00", "50.00", "66.67", "2"],
        ["token", "accuracy", "66.67"],
    ]


def test_table_of_scores_without_entities_has_only_the_overall_row():
    lines = format_metrics_table(ner_metrics([["O"]], [["O"]]), digits=1).splitlines()
    assert [line.split() for line in lines] == [
        ["precision", "recall", "f1-score", "support"],
        [],
        ["overall", "0.0", "0.0", "0.0", "0"],
        ["token", "accuracy", "100.0"],
    ]
