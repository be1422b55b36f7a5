"""Picks the knowledge input-dropout rate of `full+knowledge+dropout` from the short sweep of `run_accuracy.sh`.

    python benchmarks/select_input_dropout.py SWEEP_DIR RATE [RATE ...]

Each rate's run (`SWEEP_DIR/t15-minilm-full+knowledge+dropout<RATE>-s1/results.json`) was scored on valid
with the knowledge and without it (`--drop_text_sources_at_eval knowledge`). The chosen rate maximises the
mean of the two lenient valid F1s (one model must serve posts with and without knowledge); a tie goes to the
lower rate. Prints the rate; exits 3, naming the missing runs, while the sweep is incomplete. Valid only:
test scores are never read.
"""

import argparse
import json
import sys
from pathlib import Path

SWEEP_RUN = "t15-minilm-full+knowledge+dropout{rate}-s1"


def valid_f1s(results_file: Path) -> tuple[float, float]:
    """(lenient valid F1 with the knowledge, the same without it) of one sweep run."""
    results = json.loads(results_file.read_text(encoding="utf-8"))
    try:
        with_knowledge = results["metrics"]["valid"]["lenient"]["overall_f1"]
        without = results["metrics_without"]["metrics"]["valid"]["lenient"]["overall_f1"]
    except KeyError as missing:
        raise SystemExit(
            f"{results_file}: no valid F1 {missing} (was it run with --drop_text_sources_at_eval?)"
        ) from None
    return with_knowledge, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("rates", nargs="+")
    args = parser.parse_args()
    files = {rate: args.sweep_dir / SWEEP_RUN.format(rate=rate) / "results.json" for rate in args.rates}
    missing = [str(path.parent) for path in files.values() if not path.is_file()]
    if missing:
        print(f"input-dropout sweep incomplete: {', '.join(missing)} not finished", file=sys.stderr)
        raise SystemExit(3)
    scores = {rate: valid_f1s(path) for rate, path in files.items()}
    for rate, (with_knowledge, without) in scores.items():
        print(
            f"rate {rate}: valid F1 {100 * with_knowledge:.2f} with, {100 * without:.2f} without",
            file=sys.stderr,
        )
    # max keeps the first of equal means (to 1e-9, below float noise): the lowest rate.
    best = max(sorted(scores, key=float), key=lambda rate: round(sum(scores[rate]), 9))
    print(best)


if __name__ == "__main__":
    main()
