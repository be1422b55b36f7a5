"""Collects the runs of `benchmarks/run_accuracy.sh` into `benchmarks/results/accuracy.json`, the accuracy tables
of `BENCHMARKS.md` (between its `accuracy-tables` markers) and the valid-F1-per-epoch plot.

    python benchmarks/collect_accuracy.py [--runs outputs/benchmarks]

Every finished run (`<dataset>-<encoder>-<config>-s<seed>/results.json`) gives one record per evaluated split.
The tables give lenient F1 (seqeval's default, the published convention) as mean ± sample std over seeds, and
strict (IOB2) F1 beside it; the model of every run was selected on `valid` only.
"""

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from modeling_mgcm.atomic_files import write_json_atomically
from processing.corpus.labels import ENTITY_TYPES
from processing.training.model_card import RESULTS_FILE

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = re.compile(r"(?P<dataset>t15|t17)-(?P<encoder>minilm|mpnet)-(?P<config>.+)-s(?P<seed>\d+)")
DATASETS = {"t15": "twitter2015", "t17": "twitter2017"}
ENCODERS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
# Table order and what each config adds (each row differs from the one above it by one part).
CONFIGS = {
    "text": "encoder + CRF",
    "text+shape": "+ word-shape feature",
    "text+shape+sa": "+ semantic augmentation (GloVe 50d, k=4, gate)",
    "text+shape+sa-add": "same, `add` instead of `gate`",
    "full": "+ caption granularity: the full offline MGCM",
    "full-aux": "the full model without the auxiliary span loss",
    "text+caption-concat": "control: encoder + CRF, caption appended as a second text segment",
}
# The reference: all-mpnet-base-v2 with a softmax token-classification head, 4 epochs, test F1.
PLAIN_MPNET_TEST_F1 = 74.87
# The runs whose valid F1 per epoch is plotted, one panel per encoder.
PLOTTED_RUNS = {
    "all-MiniLM-L6-v2": ("t15-minilm-text-s1", "t15-minilm-full-s1"),
    "all-mpnet-base-v2": ("t15-mpnet-text-s1", "t15-mpnet-full-s1"),
}
TABLES_START, TABLES_END = "<!-- accuracy-tables:start -->", "<!-- accuracy-tables:end -->"


def run_records(run_dir: Path) -> list[dict]:
    """One record per split the run's selected model was evaluated on."""
    match = RUN_NAME.fullmatch(run_dir.name)
    if match is None:
        raise ValueError(f"{run_dir}: not a run_accuracy.sh run name (<dataset>-<encoder>-<config>-s<seed>)")
    results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    training = results["training"]
    records = []
    for split, by_mode in sorted(results["metrics"].items()):
        lenient, strict = by_mode["lenient"], by_mode["strict"]
        records.append(
            {
                "dataset": DATASETS[match["dataset"]],
                "split": split,
                "config": match["config"],
                "encoder": ENCODERS[match["encoder"]],
                "seed": int(match["seed"]),
                "epochs": training["epochs_run"],
                "best_epoch": training["best_epoch"] + 1,
                "overall_precision": lenient["overall_precision"],
                "overall_recall": lenient["overall_recall"],
                "overall_f1": lenient["overall_f1"],
                "strict_f1": strict["overall_f1"],
                "gold_entities": lenient["overall_number"],
                "per_type": {name: lenient[name] for name in ENTITY_TYPES if name in lenient},
                "train_seconds": training["train_seconds"],
                "mixed_precision": training["mixed_precision"],
                "run": run_dir.name,
            }
        )
    return records


def mean_std(values: list[float]) -> str:
    """`mean ± std` in F1 points (sample std; a single run has none)."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def accuracy_tables(records: list[dict]) -> str:
    """Markdown tables, one per encoder: a row per config, a column pair (lenient, strict) per dataset split."""
    columns = [("twitter2015", "valid"), ("twitter2015", "test"), ("twitter2017", "valid")]
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        grouped[record["encoder"], record["config"], record["dataset"], record["split"]].append(record)
    lines = []
    for encoder in ENCODERS.values():
        if not any(record["encoder"] == encoder for record in records):
            continue
        lines += [
            f"**{encoder}**: F1 in points, lenient (strict); mean ± std over the seeds counted in `n` (one count per"
            " column where they differ).",
            "",
            "| config | what is on | "
            + " | ".join(f"{dataset} {split}" for dataset, split in columns)
            + " | n |",
            "|---|---|" + "---|" * len(columns) + "---|",
        ]
        for config, description in CONFIGS.items():
            cells, counts = [], []
            for dataset, split in columns:
                runs = grouped.get((encoder, config, dataset, split), [])
                counts.append(len(runs))
                if runs:
                    strict = 100 * statistics.fmean(record["strict_f1"] for record in runs)
                    cells.append(f"{mean_std([record['overall_f1'] for record in runs])} ({strict:.2f})")
                else:
                    cells.append("not run yet")
            if any(counts):
                ran = set(counts) - {0}
                n = str(*ran) if len(ran) == 1 else " / ".join(str(count or "–") for count in counts)
                lines.append(f"| `{config}` | {description} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    return "\n".join(lines)


def per_type_table(records: list[dict], dataset: str = "twitter2015", split: str = "test") -> str:
    """Lenient F1 per entity type on one split (mean over seeds), a row per encoder and config."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        if (record["dataset"], record["split"]) == (dataset, split):
            grouped[record["encoder"], record["config"]].append(record)
    if not grouped:
        return ""
    lines = [
        f"Per entity type, {dataset} {split}, lenient F1 (mean over seeds):",
        "",
        "| encoder | config | " + " | ".join(ENTITY_TYPES) + " | overall |",
        "|---|---|" + "---|" * (len(ENTITY_TYPES) + 1),
    ]
    for encoder in ENCODERS.values():
        for config in CONFIGS:
            runs = grouped.get((encoder, config))
            if not runs:
                continue
            cells = [
                f"{100 * statistics.fmean(r['per_type'][name]['f1'] for r in runs):.2f}"
                for name in ENTITY_TYPES
            ]
            cells.append(f"{100 * statistics.fmean(r['overall_f1'] for r in runs):.2f}")
            lines.append(f"| {encoder} | `{config}` | " + " | ".join(cells) + " |")
    lines.append("| MGCM paper | bert-base-cased, pixels | 85.84 | 82.03 | 63.08 | 40.81 | 74.57 |")
    return "\n".join(lines) + "\n"


def best_epoch_lines(records: list[dict]) -> str:
    """The epoch each run kept (selected on valid), per encoder, dataset and config."""
    kept: dict[tuple, list[str]] = defaultdict(list)
    for record in records:
        if record["split"] == "valid":
            key = (record["encoder"], record["dataset"], record["config"])
            kept[key].append(f"{record['best_epoch']}/{record['epochs']}")
    lines = ["Epoch kept (best valid F1) / epochs run, per seed:", ""]
    for (encoder, dataset, config), epochs in sorted(kept.items()):
        lines.append(f"- {encoder}, {dataset}, `{config}`: {', '.join(epochs)}")
    return "\n".join(lines) + "\n"


def target_lines(records: list[dict]) -> str:
    """The issue's targets, each with its measured numbers."""

    def f1s(encoder: str, config: str, dataset: str, split: str) -> list[float]:
        return [
            r["overall_f1"]
            for r in records
            if (r["encoder"], r["config"], r["dataset"], r["split"]) == (encoder, config, dataset, split)
        ]

    lines = []
    for dataset, split in (("twitter2015", "test"), ("twitter2017", "valid")):
        full, text = (
            f1s(ENCODERS["minilm"], "full", dataset, split),
            f1s(ENCODERS["minilm"], "text", dataset, split),
        )
        if full and text:
            gain = 100 * (statistics.fmean(full) - statistics.fmean(text))
            verdict = "met" if gain >= 1.0 else "missed"
            if min(len(full), len(text)) < 3:
                verdict += f" so far (the target is over 3 seeds; {min(len(full), len(text))} done)"
            lines.append(
                f"- MiniLM full − text on {dataset} {split}: {gain:+.2f} F1 (means over {len(full)} and "
                f"{len(text)} seeds); target ≥ +1.0: **{verdict}**."
            )
    mpnet_full = f1s(ENCODERS["mpnet"], "full", "twitter2015", "test")
    if mpnet_full:
        score = 100 * statistics.fmean(mpnet_full)
        verdict = "met" if score >= 76.0 else "missed"
        line = f"- MPNet full on twitter2015 test: {score:.2f} F1 (mean over {len(mpnet_full)} seed{'s' * (len(mpnet_full) > 1)})"
        line += f"; target ≥ 76.0: **{verdict}**"
        mpnet_text = f1s(ENCODERS["mpnet"], "text", "twitter2015", "test")
        if mpnet_text:
            line += f" ({100 * (statistics.fmean(mpnet_full) - statistics.fmean(mpnet_text)):+.2f} over MPNet `text`"
            line += f", {score - PLAIN_MPNET_TEST_F1:+.2f} over the plain MPNet fine-tune's {PLAIN_MPNET_TEST_F1})"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def plot_valid_curves(panels: dict[str, list[Path]], output: Path) -> None:
    """Valid lenient F1 after each epoch: a panel per encoder, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, all_axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=120, squeeze=False)
    for axes, (encoder, run_dirs) in zip(all_axes[0], panels.items(), strict=True):
        for run_dir in run_dirs:
            history = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))["history"]
            epochs = [entry["epoch"] + 1 for entry in history]
            axes.plot(epochs, [100 * entry["valid_f1"] for entry in history], marker="o", label=run_dir.name)
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
    parser.add_argument("--benchmarks_md", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "valid_f1_per_epoch.png")
    args = parser.parse_args(argv)

    run_dirs = sorted(path.parent for path in args.runs.glob(f"*/{RESULTS_FILE}"))
    if not run_dirs:
        raise SystemExit(f"no finished run ({RESULTS_FILE}) under {args.runs}: nothing to collect")
    records = [record for run_dir in run_dirs for record in run_records(run_dir)]
    records.sort(
        key=lambda r: (r["encoder"], r["dataset"], list(CONFIGS).index(r["config"]), r["seed"], r["split"])
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(args.output, records)
    print(f"{len(run_dirs)} runs, {len(records)} records -> {args.output}")

    tables = (
        accuracy_tables(records)
        + "\n"
        + per_type_table(records)
        + "\n"
        + best_epoch_lines(records)
        + "\n"
        + target_lines(records)
    )
    print(tables)
    if args.benchmarks_md.exists():
        replace_between_markers(args.benchmarks_md, tables)
    panels = {encoder: [d for d in run_dirs if d.name in names] for encoder, names in PLOTTED_RUNS.items()}
    panels = {encoder: curves for encoder, curves in panels.items() if curves}
    if panels:
        plot_valid_curves(panels, args.plot)
        print(f"valid curves of {[d.name for curves in panels.values() for d in curves]} -> {args.plot}")


if __name__ == "__main__":
    main()
