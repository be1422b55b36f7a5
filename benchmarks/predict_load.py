"""Load test of `mgcm-predict`: tag 2,000 and 20,000 synthetic posts (good images, missing and corrupt images,
no image, and some lines that are not JSON) from JSON Lines, each run in its own process, and report peak
RSS, throughput and the checks: one output line per input line in order, summary counts that add up, and
peak RSS at 20,000 posts within 10% of that at 2,000.

    python benchmarks/predict_load.py [--model FOLDER] [--posts 2000,20000] [--chunk_size 512] [--batch_size 32]

Without `--model`, a tiny untrained full-featured MGCM folder (image, objects, caption, neighbour table) is
built in a temporary folder: memory and line accounting do not depend on training.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import finish_measured, start_measured  # noqa: E402

NUM_GOOD_IMAGES = 40
# Per block of 10 posts: 6 with a good image, 1 with a missing image, 1 with a corrupt image, 2 without.
GOOD, MISSING, CORRUPT, NO_IMAGE = "good", "missing", "corrupt", "none"
IMAGE_KIND_OF_DIGIT = [GOOD] * 6 + [MISSING, CORRUPT, NO_IMAGE, NO_IMAGE]
BAD_LINE_EVERY = 1000
SUMMARY_PATTERNS = {
    "posts": r"posts: (\d+) \(",
    "tagged": r"\((\d+) tagged",
    "errors": r"tagged, (\d+) errors\)",
    "entities": r"entities: (\d+) ",
    "masked_images": r"posts whose image was masked: (\d+)",
    "posts_per_second": r"throughput: ([\d.]+) posts/s",
}


def build_tiny_model(folder: Path) -> Path:
    """Save a tiny untrained MGCM model and processor with every granularity into `folder`."""
    from processing.testing.tiny_backbones import save_tiny_mgcm

    return save_tiny_mgcm(folder)


def write_image_pool(folder: Path, seed: int = 0) -> tuple[list[Path], list[Path], list[Path]]:
    """Good synthetic tweet images, corrupt files (truncated, not an image) and paths that do not exist."""
    from processing import make_synthetic_corpus

    folder.mkdir(parents=True, exist_ok=True)
    corpus = make_synthetic_corpus(NUM_GOOD_IMAGES * 2, 0, 0, seed=seed)["train"]
    good = []
    for row in corpus:
        if row["image"] is not None and len(good) < NUM_GOOD_IMAGES:
            path = folder / f"good-{len(good)}.png"
            row["image"].save(path)
            good.append(path)
    truncated, not_an_image = folder / "truncated.png", folder / "error-page.jpg"
    truncated.write_bytes(good[0].read_bytes()[:100])
    not_an_image.write_bytes(b"<html><body>404 Not Found</body></html>")
    return good, [truncated, not_an_image], [folder / "never-downloaded.jpg"]


def write_posts(
    path: Path, num_posts: int, image_folder: Path, seed: int = 0, bad_line_every: int = BAD_LINE_EVERY
) -> dict[str, int]:
    """Write `num_posts` JSON lines, every `bad_line_every`-th one not JSON; returns how many of each kind
    were written (for the checks)."""
    from processing import make_synthetic_corpus

    good, corrupt, missing = write_image_pool(image_folder, seed)
    rows = make_synthetic_corpus(200, 0, 0, seed=seed + 1)["train"].remove_columns("image")
    texts = [(" ".join(row["tokens"]), row["caption"], [o["label"] for o in row["objects"]]) for row in rows]
    counts: Counter = Counter()
    with open(path, "w", encoding="utf-8") as posts:
        for index in range(num_posts):
            if index % bad_line_every == bad_line_every - 1:
                posts.write('{"text": "a line cut short\n')
                counts["bad_lines"] += 1
                continue
            text, caption, objects = texts[index % len(texts)]
            post = {"id": f"post-{index}", "text": text, "caption": caption, "objects": objects}
            kind = IMAGE_KIND_OF_DIGIT[index % 10]
            if kind == GOOD:
                post["image"] = str(good[index % len(good)])
            elif kind == CORRUPT:
                post["image"] = str(corrupt[index % len(corrupt)])
            elif kind == MISSING:
                post["image"] = str(missing[0])
            counts[kind] += 1
            posts.write(json.dumps(post) + "\n")
    return dict(counts)


def predict_arguments(model: Path, posts: Path, output: Path, chunk_size: int, batch_size: int) -> list[str]:
    """The Python arguments that run `mgcm-predict` over a JSON Lines file, without a progress bar."""
    arguments = ["-m", "processing.predict_cli", "--model", str(model), "--input", str(posts)]
    arguments += ["--output", str(output), "--chunk_size", str(chunk_size), "--batch_size", str(batch_size)]
    return arguments + ["--no_progress"]


def predict_environment(extra_environment: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment, offline, with this project importable."""
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(PROJECT_ROOT), **(extra_environment or {}))


def run_predict(
    model: Path, posts: Path, output: Path, chunk_size: int, batch_size: int, extra_environment=None
) -> dict:
    """Run `mgcm-predict` (as `python -m processing.predict_cli`) in its own process; its peak RSS (MiB, from
    the kernel's accounting of that process alone), wall time, exit status and standard error."""
    arguments = predict_arguments(model, posts, output, chunk_size, batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = start_measured(arguments, stderr, predict_environment(extra_environment))
        returncode, peak_rss_mib = finish_measured(process)
        stderr.seek(0)
        error_text = stderr.read().decode("utf-8", errors="replace")
    return {
        "returncode": returncode,
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib,
        "stderr": error_text,
    }


def parse_summary(stderr: str) -> dict[str, float]:
    summary = {}
    for name, pattern in SUMMARY_PATTERNS.items():
        match = re.search(pattern, stderr)
        if match is None:
            raise ValueError(f"no {name!r} in the summary of mgcm-predict:\n{stderr[-2000:]}")
        summary[name] = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
    return summary


def check_outputs(posts: Path, output: Path, counts: dict[str, int], summary: dict) -> list[str]:
    """What must hold of a run; returns the problems found (empty when all hold)."""
    problems = []
    inputs = posts.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    if len(records) != len(inputs):
        problems.append(f"{len(inputs)} input lines but {len(records)} output lines")
    for number, (line, record) in enumerate(zip(inputs, records, strict=False), start=1):
        expected_id = json.loads(line)["id"] if line.endswith("}") else None
        if record.get("line") != number or record.get("id") != expected_id:
            problems.append(
                f"output line {number} is {record.get('line')}/{record.get('id')}, not {number}/{expected_id}"
            )
            break
    errors = sum("error" in record for record in records)
    masked = sum("image_error" in record for record in records)
    entities = sum(len(record.get("entities", ())) for record in records)
    expected = {
        "posts": len(inputs),
        "tagged": len(inputs) - counts.get("bad_lines", 0),
        "errors": counts.get("bad_lines", 0),
        "masked_images": counts.get(MISSING, 0) + counts.get(CORRUPT, 0),
        "entities": entities,
    }
    for name, value in expected.items():
        if summary[name] != value:
            problems.append(f"summary {name} = {summary[name]}, expected {value}")
    if errors != expected["errors"] or masked != expected["masked_images"]:
        problems.append(f"output has {errors} error and {masked} masked-image records; expected {expected}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained MGCM folder (default: a tiny untrained one)")
    parser.add_argument("--posts", default="2000,20000", help="comma-separated run sizes")
    parser.add_argument("--chunk_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.posts.split(",")]
    with tempfile.TemporaryDirectory(prefix="mgcm-predict-load-") as work:
        work = Path(work)
        model = args.model or build_tiny_model(work / "model")
        results = []
        for size in sizes:
            posts, output = work / f"posts-{size}.jsonl", work / f"predictions-{size}.jsonl"
            counts = write_posts(posts, size, work / "images")
            run = run_predict(model, posts, output, args.chunk_size, args.batch_size)
            if run["returncode"] != 0:
                print(run["stderr"][-4000:], file=sys.stderr)
                return 1
            summary = parse_summary(run["stderr"])
            problems = check_outputs(posts, output, counts, summary)
            results.append((size, run, summary, problems))
            print(
                f"{size:>7} posts: peak RSS {run['peak_rss_mib']:.0f} MiB, {run['seconds']:.1f} s "
                f"({summary['posts_per_second']} posts/s), {summary['tagged']} tagged, {summary['errors']} errors, "
                f"{summary['masked_images']} masked images, {summary['entities']} entities; "
                + ("all checks hold" if not problems else "PROBLEMS: " + "; ".join(problems))
            )
    peaks = [run["peak_rss_mib"] for _, run, _, _ in results]
    growth = max(peaks) / min(peaks) - 1
    print(f"peak RSS growth from {sizes[0]} to {sizes[-1]} posts: {100 * growth:.1f}% (limit 10%)")
    failed = growth > 0.10 or any(problems for *_, problems in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
