"""Local fuzzing budget: run `tests/test_fuzz_readers.py` with at least 10,000 generated cases per target and
report, per target, the passing and failing cases Hypothesis counted and the time taken.

    python benchmarks/fuzz_readers.py [--examples 10000] [-k EXPRESSION]

CI runs the same file with a small budget and a fixed seed; this runner only raises `MGCM_FUZZ_EXAMPLES`.
The seed stays fixed (`derandomize=True`), so a failure found here reproduces with the same command.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = PROJECT_ROOT / "tests" / "test_fuzz_readers.py"
STATISTICS_TEST = re.compile(r"^tests/test_fuzz_readers\.py::(\S+):$")
STATISTICS_COUNTS = re.compile(r"(\d+) passing examples, (\d+) failing examples, (\d+) invalid examples")
STATISTICS_SECONDS = re.compile(r"during generate phase \(([\d.]+) seconds\)")


def parse_statistics(output: str) -> list[tuple[str, int, int, float]]:
    """(test name, passing cases, failing cases, generate-phase seconds) per test from Hypothesis statistics."""
    rows, name, seconds = [], None, 0.0
    for line in output.splitlines():
        line = line.strip()
        if match := STATISTICS_TEST.match(line):
            name, seconds = match.group(1), 0.0
        elif (match := STATISTICS_SECONDS.search(line)) and name:
            seconds = float(match.group(1))
        elif (match := STATISTICS_COUNTS.search(line)) and name:
            rows.append((name, int(match.group(1)), int(match.group(2)), seconds))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="generated cases per target")
    parser.add_argument("-k", dest="keyword", help="only the tests pytest's -k expression selects")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEST_FILE)]
    command += ["--hypothesis-show-statistics"] + (["-k", args.keyword] if args.keyword else [])
    environment = dict(os.environ, MGCM_FUZZ_EXAMPLES=str(args.examples))
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    rows = parse_statistics(completed.stdout)
    print(f"{'target':<90}{'passing':>9}{'failing':>9}{'seconds':>9}")
    for name, passing, failing, seconds in rows:
        print(f"{name:<90}{passing:>9}{failing:>9}{seconds:>9.1f}")
    summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
    print(f"\nbudget {args.examples} cases per target; pytest: {summary}")
    if completed.returncode != 0:
        print(completed.stdout[-6000:], completed.stderr[-2000:], sep="\n", file=sys.stderr)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
