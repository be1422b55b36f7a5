"""The evaluation that ends a training run: the model selected on valid, reloaded from `best_model/`, scored
deterministically on every final split, with and without the text sources `--drop_text_sources_at_eval`
names, and on the synthetic corpus's ambiguous mentions."""

from dataclasses import dataclass
from pathlib import Path

import datasets
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from modeling_mgcm.processing_mgcm import MGCMProcessor
from processing.corpus.synthetic import score_ambiguous_mentions
from processing.evaluation.corpus_evaluation import evaluate_corpus
from processing.evaluation.prediction_files import write_predictions
from processing.training.arguments import TrainArguments
from processing.training.data_collator import MGCMDataCollator
from processing.training.window_rows import tokenised_windows


@dataclass
class FinalEvaluation:
    """The selected model's scores: `metrics` per split and seqeval mode; `metrics_without` the same
    without the dropped text sources (None when none is dropped); `ambiguous_mentions` per split on the
    synthetic corpus (None on a real one); `predictions` the tag ids of every post per split (and
    `predictions_without` without the dropped sources, or None)."""

    metrics: dict[str, dict]
    metrics_without: dict | None
    ambiguous_mentions: dict | None
    predictions: dict[str, list[list[int]]]
    predictions_without: dict[str, list[list[int]]] | None


def load_best_weights(model: nn.Module, folder: Path) -> None:
    """Load the safetensors weights saved in `folder` into `model` (all shards)."""
    state = {}
    for shard in sorted(folder.glob("*.safetensors")):
        if shard.name.startswith("model"):
            state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"the best model in {folder} does not match: missing {missing}, unexpected {unexpected}"
        )


def evaluate_selected_model(
    args: TrainArguments,
    model: nn.Module,
    accelerator: Accelerator,
    best_dir: Path,
    eval_dataloaders: dict[str, DataLoader],
    eval_collator: MGCMDataCollator,
    processor: MGCMProcessor,
    corpus: datasets.DatasetDict,
    splits: list[str],
) -> FinalEvaluation:
    """Load the weights of `best_dir` into the (prepared) `model` and score it on `splits`."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    load_best_weights(unwrapped, best_dir)
    metrics, predictions_by_split = {}, {}
    for name in splits:
        metrics[name], predictions_by_split[name] = evaluate_corpus(
            model,
            eval_dataloaders[name],
            accelerator,
            corpus[name],
            unwrapped.config.id2label,
            f"Evaluating {name}",
        )
    metrics_without = predictions_without = None
    if args.drop_text_sources_at_eval:
        without, predictions_without = evaluate_without_sources(
            args, model, accelerator, processor, corpus, splits, eval_collator
        )
        metrics_without = {"text_sources": args.drop_text_sources_at_eval, "metrics": without}
    ambiguous_mentions = None
    if args.synthetic:
        ambiguous_mentions = {
            name: score_ambiguous_mentions(corpus[name]["tokens"], corpus[name]["ner_tags"], predictions)
            for name, predictions in predictions_by_split.items()
        }
    return FinalEvaluation(
        metrics, metrics_without, ambiguous_mentions, predictions_by_split, predictions_without
    )


def evaluate_without_sources(
    args: TrainArguments,
    model: nn.Module,
    accelerator: Accelerator,
    processor: MGCMProcessor,
    corpus: datasets.DatasetDict,
    splits: list[str],
    collator: MGCMDataCollator,
) -> tuple[dict, dict]:
    """Metrics and predictions of the selected model on `splits` with `--drop_text_sources_at_eval` removed
    from every post."""
    unwrapped = accelerator.unwrap_model(model)
    eval_corpus = type(corpus)({name: corpus[name] for name in splits})
    with accelerator.main_process_first():
        windows = tokenised_windows(processor, eval_corpus, unwrapped.config, args.drop_text_sources_at_eval)
    metrics, predictions = {}, {}
    for name in splits:
        loader = accelerator.prepare(
            DataLoader(windows[name], batch_size=args.per_device_eval_batch_size, collate_fn=collator)
        )
        metrics[name], predictions[name] = evaluate_corpus(
            model,
            loader,
            accelerator,
            corpus[name],
            unwrapped.config.id2label,
            f"Evaluating {name} without " + ",".join(args.drop_text_sources_at_eval),
        )
    return metrics, predictions


def write_split_predictions(
    folder: Path, evaluation: FinalEvaluation, corpus: datasets.DatasetDict, id2label: dict
) -> list[Path]:
    """`folder/<split>.tsv` for every evaluated split, and `<split>-without-<sources>.tsv` when text sources
    were dropped (`prediction_files` format). Main process only."""
    files = [
        write_predictions(folder / f"{name}.tsv", corpus[name], predictions, id2label)
        for name, predictions in evaluation.predictions.items()
    ]
    if evaluation.predictions_without is not None:
        dropped = "+".join(evaluation.metrics_without["text_sources"])
        for name, predictions in evaluation.predictions_without.items():
            path = folder / f"{name}-without-{dropped}.tsv"
            files.append(write_predictions(path, corpus[name], predictions, id2label))
    return files


__all__ = [
    "FinalEvaluation",
    "evaluate_selected_model",
    "evaluate_without_sources",
    "load_best_weights",
    "write_split_predictions",
]
