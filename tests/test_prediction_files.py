"""The predictions file a training run writes per split: its exact text, and reading it back."""

import datasets
import pytest

from processing import LABEL_NAMES
from processing.evaluation.prediction_files import format_predictions, read_predictions, write_predictions

ID2LABEL = dict(enumerate(LABEL_NAMES))


def tags(*names: str) -> list[int]:
    return [LABEL_NAMES.index(name) for name in names]


SPLIT = datasets.Dataset.from_dict(
    {
        "id": ["16_05_01_6", "16_05_01_7"],
        "tokens": [["RT", "@jack", ":", "Paris", "!"], ["Obama"]],
        "ner_tags": [tags("O", "B-PER", "O", "B-LOC", "O"), tags("B-PER")],
    }
)
PREDICTED = [tags("O", "B-PER", "O", "B-ORG", "O"), tags("O")]


def test_one_word_a_line_with_gold_and_predicted_tags_and_a_header_a_post():
    assert format_predictions(SPLIT, PREDICTED, ID2LABEL) == (
        "# id = 16_05_01_6\nRT\tO\tO\n@jack\tB-PER\tB-PER\n:\tO\tO\nParis\tB-LOC\tB-ORG\n!\tO\tO\n\n"
        "# id = 16_05_01_7\nObama\tB-PER\tO\n\n"
    )


def test_a_written_file_reads_back_post_by_post(tmp_path):
    path = write_predictions(tmp_path / "predictions" / "test.tsv", SPLIT, PREDICTED, ID2LABEL)
    assert read_predictions(path) == {
        "16_05_01_6": (
            ["RT", "@jack", ":", "Paris", "!"],
            ["O", "B-PER", "O", "B-LOC", "O"],
            ["O", "B-PER", "O", "B-ORG", "O"],
        ),
        "16_05_01_7": (["Obama"], ["B-PER"], ["O"]),
    }


def test_a_prediction_count_other_than_the_posts_or_words_is_refused():
    with pytest.raises(ValueError):
        format_predictions(SPLIT, PREDICTED[:1], ID2LABEL)
    with pytest.raises(ValueError):
        format_predictions(SPLIT, [PREDICTED[0][:-1], PREDICTED[1]], ID2LABEL)


def test_a_malformed_line_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "valid.tsv"
    path.write_text("# id = 1\nParis\tB-LOC\n")
    with pytest.raises(
        ValueError, match=r"valid.tsv, line 2: expected word<TAB>gold<TAB>predicted .*'Paris\\tB-LOC'"
    ):
        read_predictions(path)


def test_a_post_id_written_twice_is_refused_rather_than_merged(tmp_path):
    path = tmp_path / "valid.tsv"
    path.write_text("# id = 1\nParis\tB-LOC\tO\n\n# id = 1\nRome\tB-LOC\tB-LOC\n")
    with pytest.raises(ValueError, match=r"valid.tsv, line 4: post id '1' is there twice"):
        read_predictions(path)
