"""benchmarks/compare_predictions.py: two runs' predictions files compared entity by entity."""

import json
import sys
from pathlib import Path

import pytest

from processing import LABEL_NAMES, load_tweet_corpus
from processing.evaluation.prediction_files import write_predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_predictions  # noqa: E402

CORPUS = "IMGID:1\nObama\tB-PER\nin\tO\nParis\tB-LOC\n\nIMGID:2\nthe\tO\nBreakfast\tB-MISC\nClub\tI-MISC\n\n"
KNOWLEDGE = "1.jpg :1. Obama (person) 2. Paris (location)\n2.jpg :The Breakfast Club is a radio show\n"
# Run a finds Obama and Paris, calls the show an ORG; run b finds Obama and the show, Paris as part of a span.
PREDICTED = {
    "a": [["B-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]],
    "b": [["B-PER", "B-LOC", "I-LOC"], ["O", "B-MISC", "I-MISC"]],
}


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "valid.txt").write_text(CORPUS)
    (tmp_path / "knowledge.txt").write_text(KNOWLEDGE)
    args = {"dataset_dir": str(corpus_dir), "text_source": [f"knowledge={tmp_path / 'knowledge.txt'}"]}
    valid = load_tweet_corpus(corpus_dir)["valid"]
    folders = []
    for name, tags in PREDICTED.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"run": {"args": args}}))
        ids = [[LABEL_NAMES.index(tag) for tag in post] for post in tags]
        write_predictions(folder / "predictions" / "valid.tsv", valid, ids, dict(enumerate(LABEL_NAMES)))
        folders.append(folder)
    return folders


def test_the_entities_each_run_finds_alone_and_what_the_other_predicted_there(runs, tmp_path, capsys):
    output = tmp_path / "report.json"
    compare_predictions.main([*map(str, runs), "--source", "knowledge", "--output", str(output)])
    report = json.loads(output.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["found_by"]["all"] == {"both": 1, "a only": 1, "b only": 1}
    assert report["found_by"]["MISC"] == {"b only": 1} and report["found_by"]["LOC"] == {"a only": 1}
    assert report["where_one_alone"] == {
        "a only": {"overlapping span": 1},
        "b only": {"same span, other type": 1},
    }
    assert report["f1"]["a"]["overall"] == pytest.approx(100 * 2 / 3)  # 2 of 3 right, of 3 predicted
    # Obama and Paris are named in the knowledge, "Breakfast Club" is (lower-cased) too.
    assert report["named_by_source"] == {
        "entities": 3,
        "named": 3,
        "recall_named": {"a": pytest.approx(200 / 3), "b": pytest.approx(200 / 3)},
        "recall_not_named": {"a": None, "b": None},
    }


def test_test_is_not_a_split_to_analyse(runs):
    with pytest.raises(SystemExit):
        compare_predictions.main([*map(str, runs), "--split", "test"])
