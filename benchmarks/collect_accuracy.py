"""Collects the runs of `benchmarks/run_accuracy.sh` into `benchmarks/results/accuracy.json`, the accuracy tables
of `BENCHMARKS.md` (between its `accuracy-tables` markers) and the valid-F1-per-epoch plots.

    python benchmarks/collect_accuracy.py [--runs outputs/benchmarks] [--fresh]

Every finished run (`<dataset>-<encoder>-<config>-s<seed>/results.json`) gives one record per evaluated split,
and one more per split it was also scored on with text sources removed (`--drop_text_sources_at_eval`). The
records already in accuracy.json are kept unless a run folder gives them anew (runs outlive their folders:
run_accuracy.sh deletes the models, and a new machine has none of the old folders); `--fresh` keeps only what
the folders give. The tables give lenient F1 (seqeval's default, the published convention) as mean ± sample
std over seeds, and strict (IOB2) F1 beside it; the model of every run was selected on `valid` only (with every
text source present).
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_report import (  # noqa: E402
    ENCODERS,
    accuracy_tables,
    best_epoch_lines,
    config_rank,
    knowledge_target_lines,
    mgcm_target_lines,
    per_type_table,
    published_comparison,
)

from modeling_mgcm.atomic_files import write_json_atomically  # noqa: E402
from processing.corpus.labels import ENTITY_TYPES  # noqa: E402
from processing.training.model_card import RESULTS_FILE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = re.compile(r"(?P<dataset>t15|t17)-(?P<encoder>minilm|mpnet)-(?P<config>.+)-s(?P<seed>\d+)")
DATASETS = {"t15": "twitter2015", "t17": "twitter2017"}
# The plots: per figure, the seed-1 Twitter-2015 runs drawn, one panel per encoder.
PLOTTED_CONFIGS = {
    "valid_f1_per_epoch.png": ("text", "full"),
    "knowledge_valid_f1_per_epoch.png": ("full", "full+knowledge", "full+knowledge-concat"),
}
TABLES_START, TABLES_END = "<!-- accuracy-tables:start -->", "<!-- accuracy-tables:end -->"


def run_records(run_dir: Path) -> list[dict]:
    """One record per split the run's selected model was evaluated on, and per split scored without sources."""
    match = RUN_NAME.fullmatch(run_dir.name)
    if match is None:
        raise ValueError(f"{run_dir}: not a run_accuracy.sh run name (<dataset>-<encoder>-<config>-s<seed>)")
    results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    training, history = results["training"], results.get("history", [])
    timed = [entry for entry in history if "train_seconds" in entry]
    run = {
        "dataset": DATASETS[match["dataset"]],
        "config": match["config"],
        "encoder": ENCODERS[match["encoder"]],
        "seed": int(match["seed"]),
        "epochs": training["epochs_run"],
        "best_epoch": training["best_epoch"] + 1,
        "input_dropout": {
            source["name"]: source["input_dropout"]
            for source in results.get("run", {}).get("text_sources", [])
            if source.get("input_dropout")
        },
        "valid_f1_per_epoch": [entry["valid_f1"] for entry in history],
        "valid_strict_f1_per_epoch": [entry.get("valid_strict_f1") for entry in history],
        # Wall seconds of each epoch's last uninterrupted stretch, summed: a resumed run's total is only
        # what its last process timed, and a stretch cut by an interruption is timed by nobody.
        "train_seconds": sum(entry["train_seconds"] for entry in timed)
        if timed
        else training["train_seconds"],
        "timed_train_batches": sum(entry.get("train_batches", 0) for entry in timed),
        "mixed_precision": training["mixed_precision"],
        "run": run_dir.name,
    }
    scorings = [((), results["metrics"])]
    if "metrics_without" in results:
        scorings.append(
            (tuple(results["metrics_without"]["text_sources"]), results["metrics_without"]["metrics"])
        )
    records = []
    for removed, metrics in scorings:
        for split, by_mode in sorted(metrics.items()):
            lenient, strict = by_mode["lenient"], by_mode["strict"]
            records.append(
                run
                | {
                    "split": split,
                    "eval_without": list(removed),
                    "overall_precision": lenient["overall_precision"],
                    "overall_recall": lenient["overall_recall"],
                    "overall_f1": lenient["overall_f1"],
                    "strict_f1": strict["overall_f1"],
                    "gold_entities": lenient["overall_number"],
                    "per_type": {name: lenient[name] for name in ENTITY_TYPES if name in lenient},
                }
            )
    return records


def merged_records(kept: list[dict], collected: list[dict]) -> list[dict]:
    """`kept` (accuracy.json's records) with the runs of `collected` replacing theirs, in table order."""
    runs = {record["run"] for record in collected}
    # Records of before the knowledge runs were all scored with every source present.
    records = [{"eval_without": []} | record for record in kept if record["run"] not in runs] + collected
    records.sort(
        key=lambda r: (
            r["encoder"],
            r["dataset"],
            config_rank(r["config"]),
            r["config"],
            tuple(r["eval_without"]),
            r["seed"],
            r["split"],
        )
    )
    return records


def step_seconds(cost_files: list[Path]) -> dict[str, dict[str, float]]:
    """Median training step per encoder and config from `training_cost.py` reports (later files win)."""
    steps: dict[str, dict[str, float]] = {}
    for path in cost_files:
        if path.is_file():
            encoders = json.loads(path.read_text(encoding="utf-8"))["training"]["encoders"]
            for encoder, measured in encoders.items():
                for config, row in measured["configs"].items():
                    steps.setdefault(encoder, {})[config] = row["median_step_seconds"]
    return steps


def curves(records: list[dict], configs: tuple[str, ...]) -> dict[str, list[tuple[str, str, list[float]]]]:
    """Per encoder, (label, config, valid F1 per epoch) of the Twitter-2015 seed-1 runs of `configs` that kept
    theirs; a record with a `curve_label` is drawn under it."""
    panels: dict[str, list[tuple[str, str, list[float]]]] = {}
    for config in configs:
        for record in records:
            if (
                (record["dataset"], record["split"], record["seed"], record["config"])
                != (
                    "twitter2015",
                    "valid",
                    1,
                    config,
                )
                or record["eval_without"]
                or not record.get("valid_f1_per_epoch")
            ):
                continue
            label = record.get("curve_label", record["run"])
            panels.setdefault(record["encoder"], []).append((label, config, record["valid_f1_per_epoch"]))
    return panels


def plot_valid_curves(panels: dict[str, list[tuple[str, str, list[float]]]], output: Path) -> None:
    """Valid lenient F1 after each epoch: a panel per encoder, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, all_axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=120, squeeze=False)
    for axes, (encoder, runs) in zip(all_axes[0], panels.items(), strict=True):
        for label, _, valid_f1 in runs:
            axes.plot(range(1, len(valid_f1) + 1), [100 * f1 for f1 in valid_f1], marker="o", label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel("valid F1 (lenient seqeval)")
        axes.set_title(f"{encoder}: valid F1 per epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def replace_between_markers(path: Path, content: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.find(TABLES_START), text.find(TABLES_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {TABLES_START} ... {TABLES_END} block to fill")
    text = text[: start + len(TABLES_START)] + "\n" + content + text[end:]
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "outputs" / "benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.json")
    parser.add_argument(
        "--fresh", action="store_true", help="keep none of the output's records: only the runs'"
    )
    parser.add_argument("--benchmarks_md", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--plots_dir", type=Path, default=REPO / "benchmarks")
    parser.add_argument(
        "--curve_runs",
        type=Path,
        nargs="*",
        default=[],
        help="more run folders whose valid F1 per epoch is drawn (not recorded), for rows whose records kept none",
    )
    parser.add_argument(
        "--cost",
        type=Path,
        nargs="*",
        default=[
            REPO / "benchmarks" / "results" / name
            for name in ("cost.json", "cost_text_sources.json", "cost_text_sources_mpnet.json")
        ],
        help="training_cost.py reports whose step times give the cost target",
    )
    args = parser.parse_args(argv)

    run_dirs = sorted(path.parent for path in args.runs.glob(f"*/{RESULTS_FILE}"))
    kept = (
        [] if args.fresh or not args.output.is_file() else json.loads(args.output.read_text(encoding="utf-8"))
    )
    if not run_dirs and not kept:
        raise SystemExit(f"no finished run ({RESULTS_FILE}) under {args.runs}: nothing to collect")
    records = merged_records(kept, [record for run_dir in run_dirs for record in run_records(run_dir)])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(args.output, records)
    print(f"{len(run_dirs)} runs collected, {len(records)} records -> {args.output}")

    tables = "\n".join(
        part
        for part in (
            accuracy_tables(records),
            published_comparison(records),
            per_type_table(records),
            best_epoch_lines(records),
            mgcm_target_lines(records),
            knowledge_target_lines(records, step_seconds(args.cost)),
        )
        if part
    )
    print(tables)
    if args.benchmarks_md.exists():
        replace_between_markers(args.benchmarks_md, tables)
    extra = [
        record | {"curve_label": f"{record['run']} ({run_dir.parent.name}/, not in accuracy.json)"}
        for run_dir in args.curve_runs
        for record in run_records(run_dir)
    ]
    for file_name, configs in PLOTTED_CONFIGS.items():
        panels = curves(records + extra, configs)
        drawn = {config for runs in panels.values() for _, config, _ in runs}
        if missing := [config for config in configs if config not in drawn]:
            # A figure is redrawn whole or not at all: the earlier one may hold curves whose folders are gone.
            print(f"{file_name} not redrawn: no valid F1 per epoch of {missing} (seed 1, twitter2015)")
            continue
        plot_valid_curves(panels, args.plots_dir / file_name)
        print(f"valid curves of {[label for runs in panels.values() for label, _, _ in runs]} -> {file_name}")


if __name__ == "__main__":
    main()
