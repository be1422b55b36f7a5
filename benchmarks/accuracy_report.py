"""The markdown `collect_accuracy.py` writes into BENCHMARKS.md from the accuracy records: a table per encoder, the
per-type table, the epochs kept, the published systems beside ours, and each issue's targets with their verdicts.

A record is one split of one run scored one way (see `collect_accuracy.run_records`); `eval_without` names the
text sources removed when it was scored (the same trained model, evaluated as if no post had them).
"""

import statistics
from collections import defaultdict

from processing.corpus.labels import ENTITY_TYPES

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
    "full+knowledge": "`full` + PGIM's knowledge as a granularity (a block of its own, read without gradient)",
    "full+knowledge-shared": "the same, one block shared by caption and knowledge",
    "full+knowledge-cross2": "the same, each block's cross-attention steps two layers deep instead of one",
    "full+knowledge-grad": "the same, back-propagating into the encoder through the caption and knowledge",
    "full+knowledge+dropout": "`full+knowledge` trained with knowledge input dropout (rate from the valid sweep)",
    "full+knowledge-concat": "`full` + the knowledge appended to the tweet as a second segment",
    "text+knowledge-concat": "PGIM's method: encoder + CRF, the knowledge appended as a second segment",
}
COLUMNS = (("twitter2015", "valid"), ("twitter2015", "test"), ("twitter2017", "valid"))
# The reference: all-mpnet-base-v2 with a softmax token-classification head, 4 epochs, test F1.
PLAIN_MPNET_TEST_F1 = 74.87
# Published test F1 (Twitter-2015, Twitter-2017) of the systems issue 16 measures against, all XLM-R-large.
PUBLISHED = (
    ("XLM-R-large text-only CRF", "560M", 77.04, 89.11),
    ("ITA", "560M", 78.03, 89.75),
    ("PGIM (XLM-R-large + LLM knowledge)", "560M", 79.33, 91.43),
)
ENCODER_PARAMETERS = {"all-MiniLM-L6-v2": "23M", "all-mpnet-base-v2": "110M"}
KNOWLEDGE_CONFIGS = (
    "full+knowledge",
    "full+knowledge-concat",
    "text+knowledge-concat",
    "full+knowledge+dropout",
)


def config_rank(config: str) -> int:
    """A config's place in the tables: `CONFIGS` order, unknown configs last."""
    order = list(CONFIGS)
    return order.index(config) if config in order else len(order)


def row_key(record: dict) -> tuple[str, tuple[str, ...]]:
    """A table row: the config and the text sources removed at evaluation (none for most records)."""
    return record["config"], tuple(record["eval_without"])


def row_label(config: str, removed: tuple[str, ...]) -> str:
    return f"`{config}`" + (f", {' and '.join(removed)} removed at evaluation" if removed else "")


def ordered_rows(records: list[dict]) -> list[tuple[str, tuple[str, ...]]]:
    """The rows present in `records`, in `CONFIGS` order (unknown configs last), each scored-as-trained row first."""
    return sorted({row_key(record) for record in records}, key=lambda row: (config_rank(row[0]), row))


def select(records: list[dict], **fields) -> list[dict]:
    """The records whose fields equal `fields` (`eval_without` defaults to none removed)."""
    fields.setdefault("eval_without", ())
    return [
        r
        for r in records
        if all((tuple(r[k]) if k == "eval_without" else r[k]) == v for k, v in fields.items())
    ]


def mean_std(values: list[float]) -> str:
    """`mean ± std` in F1 points (sample std; a single run has none)."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def seed_counts(counts: list[int]) -> str:
    """The `n` cell: one count when every column that ran has it, else a count per column (– for none)."""
    ran = set(counts) - {0}
    return str(*ran) if len(ran) == 1 else " / ".join(str(count or "–") for count in counts)


def mean_f1(records: list[dict]) -> float:
    return 100 * statistics.fmean(record["overall_f1"] for record in records)


def accuracy_tables(records: list[dict]) -> str:
    """Markdown tables, one per encoder: a row per config, a column pair (lenient, strict) per dataset split."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        grouped[record["encoder"], row_key(record), record["dataset"], record["split"]].append(record)
    lines = []
    for encoder in ENCODERS.values():
        of_encoder = [record for record in records if record["encoder"] == encoder]
        if not of_encoder:
            continue
        lines += [
            f"**{encoder}**: F1 in points, lenient (strict); mean ± std over the seeds counted in `n` (one count per"
            " column where they differ).",
            "",
            "| config | what is on | "
            + " | ".join(f"{dataset} {split}" for dataset, split in COLUMNS)
            + " | n |",
            "|---|---|" + "---|" * len(COLUMNS) + "---|",
        ]
        for config, removed in ordered_rows(of_encoder):
            cells, counts = [], []
            for dataset, split in COLUMNS:
                runs = grouped.get((encoder, (config, removed), dataset, split), [])
                counts.append(len(runs))
                if runs:
                    strict = 100 * statistics.fmean(record["strict_f1"] for record in runs)
                    cells.append(f"{mean_std([record['overall_f1'] for record in runs])} ({strict:.2f})")
                else:
                    cells.append("not run yet")
            n = seed_counts(counts)
            description = (
                "the same models, scored with no post's " + " or ".join(removed)
                if removed
                else CONFIGS.get(config, "")
            )
            lines.append(
                f"| {row_label(config, removed)} | {description} | " + " | ".join(cells) + f" | {n} |"
            )
        lines.append("")
    return "\n".join(lines)


def per_type_table(records: list[dict], dataset: str = "twitter2015", split: str = "test") -> str:
    """Lenient F1 per entity type on one split (mean over seeds), a row per encoder and config."""
    on_split = [record for record in records if (record["dataset"], record["split"]) == (dataset, split)]
    if not on_split:
        return ""
    lines = [
        f"Per entity type, {dataset} {split}, lenient F1 (mean over seeds):",
        "",
        "| encoder | config | " + " | ".join(ENTITY_TYPES) + " | overall |",
        "|---|---|" + "---|" * (len(ENTITY_TYPES) + 1),
    ]
    for encoder in ENCODERS.values():
        of_encoder = [record for record in on_split if record["encoder"] == encoder]
        for row in ordered_rows(of_encoder):
            runs = [record for record in of_encoder if row_key(record) == row]
            cells = [
                f"{100 * statistics.fmean(r['per_type'][name]['f1'] for r in runs):.2f}"
                for name in ENTITY_TYPES
            ]
            lines.append(
                f"| {encoder} | {row_label(*row)} | " + " | ".join(cells) + f" | {mean_f1(runs):.2f} |"
            )
    lines.append("| MGCM paper | bert-base-cased, pixels | 85.84 | 82.03 | 63.08 | 40.81 | 74.57 |")
    return "\n".join(lines) + "\n"


def best_epoch_lines(records: list[dict]) -> str:
    """The epoch each run kept (selected on valid), per encoder, dataset and config."""
    kept: dict[tuple, list[str]] = defaultdict(list)
    for record in select(records, split="valid"):
        kept[record["encoder"], record["dataset"], record["config"]].append(
            f"{record['best_epoch']}/{record['epochs']}"
        )
    lines = ["Epoch kept (best valid F1) / epochs run, per seed:", ""]
    for (encoder, dataset, config), epochs in sorted(kept.items()):
        lines.append(f"- {encoder}, {dataset}, `{config}`: {', '.join(epochs)}")
    return "\n".join(lines) + "\n"


def published_comparison(records: list[dict]) -> str:
    """Our knowledge rows (and `full`) beside the published XLM-R-large systems, test F1 (Twitter-2017: valid
    here, its test split is not on these machines)."""
    ours = [
        (encoder, row)
        for encoder in ENCODERS.values()
        for row in ordered_rows([r for r in records if r["encoder"] == encoder])
        if row[0] in ("full", *KNOWLEDGE_CONFIGS)
    ]
    if not any(row[0] in KNOWLEDGE_CONFIGS for _, row in ours):
        return ""
    lines = [
        "Beside the published systems (lenient F1; ours: mean over `n` seeds; Twitter-2017 is valid for us, its test"
        " split is not on these machines):",
        "",
        "| system | encoder parameters | twitter2015 test | twitter2017 test (ours: valid) | n |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name}, published | {size} | {t15:.2f} | {t17:.2f} | - |" for name, size, t15, t17 in PUBLISHED
    ]
    for encoder, (config, removed) in ours:
        cells, counts = [], []
        for dataset, split in (("twitter2015", "test"), ("twitter2017", "valid")):
            runs = select(
                records, encoder=encoder, config=config, dataset=dataset, split=split, eval_without=removed
            )
            counts.append(len(runs))
            cells.append(f"{mean_f1(runs):.2f}" if runs else "not run yet")
        lines.append(
            f"| {encoder} {row_label(config, removed)} | {ENCODER_PARAMETERS[encoder]} | "
            + " | ".join(cells)
            + f" | {seed_counts(counts)} |"
        )
    return "\n".join(lines) + "\n"


def seeds(count: int) -> str:
    return f"{count} seed{'s' * (count != 1)}"


def mgcm_target_lines(records: list[dict]) -> str:
    """Issue 6's targets: what the MGCM parts add to the text model."""
    lines = []
    for dataset, split in (("twitter2015", "test"), ("twitter2017", "valid")):
        full = select(records, encoder=ENCODERS["minilm"], config="full", dataset=dataset, split=split)
        text = select(records, encoder=ENCODERS["minilm"], config="text", dataset=dataset, split=split)
        if full and text:
            gain = mean_f1(full) - mean_f1(text)
            verdict = "met" if gain >= 1.0 else "missed"
            if min(len(full), len(text)) < 3:
                verdict += f" so far (the target is over 3 seeds; {min(len(full), len(text))} done)"
            lines.append(
                f"- MiniLM full − text on {dataset} {split}: {gain:+.2f} F1 (means over {len(full)} and "
                f"{len(text)} seeds); target ≥ +1.0: **{verdict}**."
            )
    mpnet_full = select(
        records, encoder=ENCODERS["mpnet"], config="full", dataset="twitter2015", split="test"
    )
    if mpnet_full:
        score = mean_f1(mpnet_full)
        line = f"- MPNet full on twitter2015 test: {score:.2f} F1 (mean over {seeds(len(mpnet_full))})"
        line += f"; target ≥ 76.0: **{'met' if score >= 76.0 else 'missed'}**"
        mpnet_text = select(
            records, encoder=ENCODERS["mpnet"], config="text", dataset="twitter2015", split="test"
        )
        if mpnet_text:
            line += f" ({score - mean_f1(mpnet_text):+.2f} over MPNet `text`"
            line += f", {score - PLAIN_MPNET_TEST_F1:+.2f} over the plain MPNet fine-tune's {PLAIN_MPNET_TEST_F1})"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def knowledge_target_lines(records: list[dict], step_seconds: dict[str, dict[str, float]]) -> str:
    """Issue 16's targets. `step_seconds[encoder][config]`: the median training step of each config measured in
    one run (`training_cost.py`), for the cost target."""
    lines = []
    t15_test = {"dataset": "twitter2015", "split": "test"}
    mpnet = select(records, encoder=ENCODERS["mpnet"], config="full+knowledge", **t15_test)
    if mpnet:
        score = mean_f1(mpnet)
        lines.append(
            f"- Target 1, MPNet `full+knowledge` on twitter2015 test: {score:.2f} F1 (mean over {seeds(len(mpnet))});"
            f" target ≥ 79.4: **{'met' if score >= 79.4 else f'missed by {79.4 - score:.2f}'}**"
            f" (PGIM {PUBLISHED[2][2]:.2f})."
        )
    for short, encoder in ENCODERS.items():
        granularity = select(records, encoder=encoder, config="full+knowledge", **t15_test)
        concat = select(records, encoder=encoder, config="full+knowledge-concat", **t15_test)
        if not (granularity and concat):
            continue
        gap = mean_f1(granularity) - mean_f1(concat)
        line = (
            f"- Target 2, {short}: `full+knowledge` − `full+knowledge-concat` on twitter2015 test: {gap:+.2f} F1"
            f" (over {seeds(len(granularity))} and {seeds(len(concat))}): **{'met' if gap >= 0 else 'missed'}**"
        )
        steps = step_seconds.get(encoder, {})
        if "full+knowledge" in steps and "full+knowledge-concat" in steps:
            ratio = steps["full+knowledge"] / steps["full+knowledge-concat"]
            line += f"; time per epoch {ratio:.2f}x, target ≤ 0.5x: **{'met' if ratio <= 0.5 else 'missed'}**"
        lines.append(line + ".")
    for short, encoder in ENCODERS.items():
        full = select(records, encoder=encoder, config="full", **t15_test)
        dropout = select(
            records, encoder=encoder, config="full+knowledge+dropout", eval_without=("knowledge",), **t15_test
        )
        if full and dropout:
            gap = mean_f1(dropout) - mean_f1(full)
            lines.append(
                f"- Target 3, {short}: `full+knowledge+dropout` with the knowledge removed at test − `full` on"
                f" twitter2015 test: {gap:+.2f} F1 (over {seeds(len(dropout))} and {seeds(len(full))}); target ≥"
                f" −0.5: **{'met' if gap >= -0.5 else f'missed by {-0.5 - gap:.2f}'}**."
            )
    for short, encoder in ENCODERS.items():
        t17 = {"encoder": encoder, "dataset": "twitter2017", "split": "valid"}
        knowledge = select(records, config="full+knowledge", **t17)
        if knowledge:
            beside = [
                f"`{config}` {mean_f1(runs):.2f} ({seeds(len(runs))})"
                for config in ("full+knowledge", "full", "text")
                if (runs := select(records, config=config, **t17))
            ]
            lines.append(f"- Target 4, {short} on twitter2017 valid: " + ", ".join(beside) + ".")
    return "\n".join(lines) + "\n" if lines else ""
