"""What a training run reports: `results.json` (scores, history, settings, costs), the model card, the saved
model and processor, and the summaries it prints."""

import hashlib
import sys
import time
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator

from modeling_mgcm import MGCMForTokenClassification
from modeling_mgcm.atomic_files import write_json_atomically
from modeling_mgcm.processing_mgcm import MGCMProcessor
from processing.evaluation.metrics import format_metrics_table
from processing.training.arguments import TrainArguments
from processing.training.final_evaluation import FinalEvaluation
from processing.training.model_card import CARD_FILE, RESULTS_FILE, render_model_card

# The values of `vars(args)` that results.json records (the NAME=VALUE dicts are recorded per text source).
RECORDED_ARGUMENT_TYPES = (int, float, str, bool, list, type(None))


def file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def text_source_records(
    args: TrainArguments, corpus: datasets.DatasetDict, processor: MGCMProcessor
) -> list[dict]:
    """What the model card says of each text source read: its role, length, file, origin and coverage."""
    records = []
    for name in processor.text_sources:
        if name not in args.granularities and name not in processor.segment_sources:
            continue
        path = args.text_source_files.get(name)
        records.append(
            {
                "name": name,
                "role": "segment" if name in processor.segment_sources else "granularity",
                "max_length": processor.text_source_max_lengths[name],
                "file": path,
                "sha256": file_sha256(path) if path else None,
                "origin": args.text_source_origins.get(
                    name, "the synthetic corpus" if args.synthetic else None
                ),
                "input_dropout": args.input_dropout_rates.get(name, 0.0),
                "coverage": {
                    split: sum(1 for text in rows[name] if text.strip()) / max(len(rows), 1)
                    for split, rows in corpus.items()
                },
            }
        )
    return records


def run_record(
    args: TrainArguments, corpus: datasets.DatasetDict, processor: MGCMProcessor, use_image: bool
) -> dict:
    """results.json `run`: the data, backbones, granularities and options of the run."""
    return {
        "dataset": "synthetic" if args.synthetic else str(args.dataset_dir),
        "text_model": args.text_model or "tiny random BERT",
        "vision_model": (args.vision_model or "tiny random ResNet") if use_image else None,
        "granularities": args.granularities,
        "text_sources": text_source_records(args, corpus, processor),
        "augmentation_mode": args.augmentation_mode,
        "use_word_shape": not args.no_word_shape,
        "aux_span_loss_weight": args.aux_span_loss_weight,
        "seed": args.seed,
        "args": {k: v for k, v in vars(args).items() if isinstance(v, RECORDED_ARGUMENT_TYPES)},
    }


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB, or None where the OS does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def training_record(
    accelerator: Accelerator,
    state: dict,
    train_batches_total: int,
    train_batches_per_process: int,
    batches_seen: int,
    train_loop_seconds: float,
    started: float,
) -> dict:
    """results.json `training`: how the run was spread over processes, how long it took and its memory peaks.

    `state` is the loop's training state; `started` the `time.perf_counter()` at the start of the run.
    """
    return {
        "num_processes": accelerator.num_processes,
        "train_batches_total": train_batches_total,
        "train_batches_per_process": train_batches_per_process,
        "train_batches_seen_this_process": batches_seen,
        "optimizer_steps": state["completed_steps"],
        "epochs_run": len(state["history"]),
        "best_epoch": state["best_epoch"],
        # Every epoch's training across resumes (validation excluded); this process's whole loop beside it.
        "train_seconds": sum(epoch["train_seconds"] for epoch in state["history"]),
        "train_loop_seconds_this_process": train_loop_seconds,
        "total_seconds": time.perf_counter() - started,
        "mixed_precision": accelerator.mixed_precision,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_memory_mib": (
            torch.cuda.max_memory_allocated(accelerator.device) / 2**20
            if accelerator.device.type == "cuda"
            else None
        ),
    }


def assemble_results(
    evaluation: FinalEvaluation,
    history: list[dict],
    run: dict,
    training: dict,
    image_counts: dict,
    processor: MGCMProcessor,
) -> dict:
    """The content of results.json, in its order: metrics, history, [metrics_without], [ambiguous_mentions],
    run, training, images, [unknown_object_labels]."""
    results = {"metrics": evaluation.metrics, "history": history}
    if evaluation.metrics_without is not None:
        results["metrics_without"] = evaluation.metrics_without
    if evaluation.ambiguous_mentions is not None:
        results["ambiguous_mentions"] = evaluation.ambiguous_mentions
    results["run"] = run
    results["training"] = training
    results["images"] = image_counts
    if processor.unknown_object_label_counts:
        results["unknown_object_labels"] = dict(processor.unknown_object_label_counts)
    return results


def save_run_outputs(
    accelerator: Accelerator,
    model: MGCMForTokenClassification,
    processor: MGCMProcessor,
    output_dir: Path,
    results: dict,
) -> None:
    """On the main process: the selected model and processor, results.json and the model card into
    `output_dir`, and the metrics tables printed."""
    if not accelerator.is_main_process:
        return
    for item in (model, processor):
        item.save_pretrained(output_dir)
    write_json_atomically(output_dir / RESULTS_FILE, results)
    (output_dir / CARD_FILE).write_text(render_model_card(results), encoding="utf-8")
    for name, by_mode in results["metrics"].items():
        for mode, metrics in by_mode.items():
            accelerator.print(format_metrics_table(metrics, title=f"{name} ({mode} seqeval)"))


def print_example_prediction(
    model: MGCMForTokenClassification, processor: MGCMProcessor, corpus: datasets.DatasetDict
) -> None:
    """Tag one held-out tweet and print its words with the predicted tags."""
    split = corpus["test"] if "test" in corpus else corpus["valid"]
    row = next((r for r in split if any(r["ner_tags"])), split[0])
    encoding = processor(
        row["tokens"],
        images=row["image"] if model.config.use_image else None,
        objects=row["objects"] if model.config.use_objects else None,
        text_sources={name: row[name] for name in processor.text_sources if name in row},
        return_tensors="pt",
    )
    encoding = {
        k: v.to(model.device) for k, v in encoding.items() if k not in ("overflow_to_sample_mapping",)
    }
    offsets = encoding.pop("window_word_offset")
    model.eval()
    with torch.no_grad():
        predictions = model(**encoding).predictions
    merged = processor.merge_windows(predictions, [0] * len(offsets), offsets, encoding["word_mask"].sum(1))[
        0
    ]
    tagged = " ".join(
        f"{word}/{model.config.id2label[tag]}" if tag else word
        for word, tag in zip(row["tokens"], merged, strict=True)
    )
    print(f"\nExample ({row['id']}, caption: {row['caption']!r}):\n  {tagged}")


def print_text_only_comparison(granularities: list[str], results: dict, baseline: dict) -> None:
    """The synthetic corpus's table: MGCM and the text-only model, on all entities and on the ambiguous
    mentions that only the image decides."""
    split = "test" if "test" in results["metrics"] else "valid"
    print(f"\nSynthetic corpus, {split} split, lenient seqeval F1 (%):")
    print(f"{'model':<28}{'all entities':>14}{'ambiguous mentions':>20}")
    for label, run in (("MGCM (" + ",".join(granularities) + ")", results), ("text only", baseline)):
        print(
            f"{label:<28}{100 * run['metrics'][split]['lenient']['overall_f1']:>14.2f}"
            f"{100 * run['ambiguous_mentions'][split]['overall_f1']:>20.2f}"
        )


__all__ = [
    "assemble_results",
    "file_sha256",
    "peak_rss_mib",
    "print_example_prediction",
    "print_text_only_comparison",
    "run_record",
    "save_run_outputs",
    "text_source_records",
    "training_record",
]
