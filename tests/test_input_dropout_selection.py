"""`benchmarks/select_input_dropout.py`: the sweep's rate is chosen on valid scores with and without knowledge."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "select_input_dropout.py"


def write_sweep_run(
    sweep_dir: Path, rate: str, with_knowledge: float, without: float, test: float = 0.0
) -> None:
    run_dir = sweep_dir / f"t15-minilm-full+knowledge+dropout{rate}-s1"
    run_dir.mkdir(parents=True)

    def scores(f1: float) -> dict:
        return {"lenient": {"overall_f1": f1}, "strict": {"overall_f1": f1}}

    results = {
        "metrics": {"valid": scores(with_knowledge), "test": scores(test)},
        "metrics_without": {"text_sources": ["knowledge"], "metrics": {"valid": scores(without)}},
    }
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")


def select(sweep_dir: Path, *rates: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(sweep_dir), *rates], capture_output=True, text=True, check=False
    )


def test_the_rate_with_the_best_mean_of_valid_f1_with_and_without_knowledge_is_chosen(tmp_path):
    write_sweep_run(tmp_path, "0.25", with_knowledge=0.70, without=0.60)  # mean 0.650
    write_sweep_run(tmp_path, "0.5", with_knowledge=0.69, without=0.66)  # mean 0.675: chosen
    write_sweep_run(tmp_path, "0.75", with_knowledge=0.60, without=0.68, test=0.99)  # test is never read
    result = select(tmp_path, "0.25", "0.5", "0.75")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.5"
    assert "rate 0.5: valid F1 69.00 with, 66.00 without" in result.stderr


def test_a_tie_goes_to_the_lower_rate(tmp_path):
    write_sweep_run(tmp_path, "0.5", with_knowledge=0.68, without=0.64)
    write_sweep_run(tmp_path, "0.25", with_knowledge=0.70, without=0.62)
    assert select(tmp_path, "0.5", "0.25").stdout.strip() == "0.25"


def test_an_unfinished_sweep_names_the_missing_runs_and_exits_3(tmp_path):
    write_sweep_run(tmp_path, "0.25", with_knowledge=0.70, without=0.60)
    result = select(tmp_path, "0.25", "0.5")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "t15-minilm-full+knowledge+dropout0.5-s1" in result.stderr


def test_a_run_scored_without_the_knowledge_removed_is_refused(tmp_path):
    run_dir = tmp_path / "t15-minilm-full+knowledge+dropout0.25-s1"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(
        json.dumps({"metrics": {"valid": {"lenient": {"overall_f1": 0.7}}}})
    )
    result = select(tmp_path, "0.25")
    assert result.returncode == 1
    assert "--drop_text_sources_at_eval" in result.stderr
