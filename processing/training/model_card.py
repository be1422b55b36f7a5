"""The model card (`README.md`) of a trained MGCM folder, filled from the run's `results.json`.

The Hub metadata is a `huggingface_hub.ModelCardData` (licence, language, tags, base model, dataset, and the
valid/test F1 as `EvalResult`s, which the Hub shows as the model's scores); the card is a `ModelCard` of that
metadata and a Markdown body.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from processing.corpus.labels import ENTITY_TYPES

# Files of a trained folder: the run's scores and settings, which the card is filled from, and the card.
RESULTS_FILE = "results.json"
CARD_FILE = "README.md"

# The metadata every MGCM card holds: the project's licence, the language of the tweets, the library that
# loads the model and the tags the Hub lists it under. No `pipeline_tag`: the model runs in the custom
# "multimodal-ner" pipeline (trust_remote_code), which neither the Hub's widget nor
# pipeline("token-classification") can run, so `inference: false` turns the widget off.
CARD_METADATA = {
    "license": "apache-2.0",
    "language": "en",
    "library_name": "transformers",
    "tags": ["mgcm", "multimodal-ner", "named-entity-recognition"],
    "inference": False,
}
# The model-index task: entity tagging is token classification in the Hub's task list.
EVAL_TASK_TYPE = "token-classification"
EVAL_TASK_NAME = "Multimodal named entity recognition"
EVAL_METRIC = "seqeval"
# The splits a card reports scores of: the one the checkpoint was selected on and the held-out one.
EVALUATED_SPLITS = ("valid", "test")
# The tweet corpora by the folder name the project reads them from (../shared/data/<id>) and their usual name.
TWEET_CORPORA = {"twitter2015": "Twitter-2015", "twitter2017": "Twitter-2017"}
SYNTHETIC_DATASET = "synthetic"


# ------------------------------------------------------------------------------------------------------
# What the card calls the data and the models


def hub_model_id(name: str | None) -> str | None:
    """`name` if it names a model on the Hub, else None: a local folder (as transformers tells them apart: an
    existing path is local) or a name that is no valid repository id, such as "tiny random BERT"."""
    if not name or Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def is_local_path(name: str | None) -> bool:
    """Whether `name` (a `--text_model`, a file) is a path of the training machine rather than a Hub id or a
    description."""
    if not name or hub_model_id(name):
        return False
    return Path(name).expanduser().exists() or "/" in name or "\\" in name or name.startswith(("~", "."))


def dataset_names(dataset: str) -> tuple[str, str]:
    """The (id, display name) of a corpus named by its id, its display name or anything else (kept as it is)."""
    for corpus_id, name in TWEET_CORPORA.items():
        if dataset in (corpus_id, name):
            return corpus_id, name
    return dataset, dataset


def run_dataset(run: Mapping) -> str:
    """The corpus of a run record by name: "synthetic" or the last part of its folder, never the path."""
    dataset = str(run["dataset"])
    return dataset if dataset == SYNTHETIC_DATASET else Path(dataset).name or dataset


@dataclass(frozen=True)
class CardNames:
    """What a card calls the training corpus and the model, and the Hub models it derives from."""

    dataset_id: str
    dataset_name: str
    model_name: str
    base_model: tuple[str, ...] = ()


def card_names(
    results: Mapping,
    dataset: str | None = None,
    base_model: list[str] | tuple[str, ...] | None = None,
    model_name: str | None = None,
) -> CardNames:
    """The names of a run's card: `dataset` (default: the run's corpus), `base_model` (default: the run's text
    encoder and vision backbone that are Hub ids) and `model_name` (default: "mgcm-<dataset>")."""
    run = results["run"]
    dataset_id, dataset_name = dataset_names(dataset or run_dataset(run))
    if base_model is None:
        backbones = (run.get("text_model"), run.get("vision_model"))
        base_model = [model for model in map(hub_model_id, backbones) if model]
    model_name = model_name or f"mgcm-{dataset_id.split('/')[-1]}"
    return CardNames(dataset_id, dataset_name, model_name, tuple(base_model))


# ------------------------------------------------------------------------------------------------------
# The metadata


def eval_results(results: Mapping, names: CardNames) -> list[EvalResult]:
    """The entity-level F1 of each evaluated split in each seqeval mode (lenient: seqeval's default,
    conlleval-like; strict: IOB2), as the Hub's model-index reads them."""
    return [
        EvalResult(
            task_type=EVAL_TASK_TYPE,
            task_name=EVAL_TASK_NAME,
            dataset_type=names.dataset_id,
            dataset_name=names.dataset_name,
            dataset_split=split,
            metric_type="f1",
            metric_name=f"F1 ({EVAL_METRIC} {mode})",
            metric_config=mode,
            metric_value=round(metrics["overall_f1"], 4),
        )
        for split in EVALUATED_SPLITS
        for mode, metrics in results["metrics"].get(split, {}).items()
    ]


def base_card_data(
    base_model: list[str] | tuple[str, ...] = (), datasets: list[str] | None = None
) -> ModelCardData:
    """The metadata of every MGCM card (`CARD_METADATA`) with the models it derives from and its datasets."""
    return ModelCardData(**CARD_METADATA, base_model=list(base_model) or None, datasets=datasets)


def set_run_metadata(data: ModelCardData, results: Mapping, names: CardNames) -> ModelCardData:
    """`data` with a run's dataset, base model and scores, and without a pipeline tag (see `CARD_METADATA`)."""
    data.datasets = [names.dataset_id]
    data.metrics = [EVAL_METRIC]
    data.model_name = names.model_name
    data.eval_results = eval_results(results, names) or None
    if names.base_model:
        data.base_model = list(names.base_model)
    data.pipeline_tag = None
    data.inference = False
    return data


def card_text(data: ModelCardData, body: str) -> str:
    """The card's file: `data` as its YAML header, then `body`."""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


# ------------------------------------------------------------------------------------------------------
# The body


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def results_table(results: Mapping) -> str:
    """A Markdown table: one row per split and seqeval mode, overall P/R/F1 and F1 per entity type."""
    header = "| split | mode | precision | recall | F1 | " + " | ".join(ENTITY_TYPES) + " | entities |"
    rule = "|" + "---|" * (6 + len(ENTITY_TYPES))
    rows = [header, rule]
    for split, by_mode in results["metrics"].items():
        for mode, metrics in by_mode.items():
            per_type = [_percent(metrics[t]["f1"]) if t in metrics else "-" for t in ENTITY_TYPES]
            rows.append(
                f"| {split} | {mode} | {_percent(metrics['overall_precision'])} | "
                f"{_percent(metrics['overall_recall'])} | {_percent(metrics['overall_f1'])} | "
                + " | ".join(per_type)
                + f" | {metrics.get('overall_number', '-')} |"
            )
    return "\n".join(rows)


def text_sources_section(results: Mapping) -> str:
    """The card's account of the texts about each post the model read: role, length, origin, coverage."""
    sources = results["run"].get("text_sources") or []
    if not sources:
        return ""
    rows = [
        "| source | read as | word pieces | origin | file (sha256) | posts with it | input dropout |",
        "|---|---|---|---|---|---|---|",
    ]
    for source in sources:
        coverage = ", ".join(f"{split} {_percent(share)}%" for split, share in source["coverage"].items())
        file = f"`{source['file']}` (`{source['sha256'][:16]}`)" if source.get("file") else "-"
        role = "its own granularity" if source["role"] == "granularity" else "a text segment after the post"
        rows.append(
            f"| `{source['name']}` | {role} | {source['max_length']} | {source.get('origin') or 'not stated'} | "
            f"{file} | {coverage} | {source.get('input_dropout', 0.0)} |"
        )
    text = (
        "\n## Text sources\n\nTexts about each post that the model was trained with, as post keys of the "
        "pipeline and `mgcm-predict`. A post without one is tagged without it (its mask is zero), which the "
        "model met in training only as often as the coverage below says, unless input dropout was on.\n\n"
        + "\n".join(rows)
        + "\n"
    )
    without = results.get("metrics_without")
    if without:
        names = ", ".join(without["text_sources"])
        text += (
            f"\nThe same model scored as if no post had {names} (the selected checkpoint, nothing retrained):"
            f"\n\n{results_table(without)}\n"
        )
    return text


def model_card_body(results: Mapping, names: CardNames) -> str:
    """The card's Markdown: what the model is, how it was trained and selected, its scores and its use."""
    run = results["run"]
    granularities = ", ".join(run["granularities"]) or "none (text only)"
    missing = results.get("images", {})
    image_line = (
        f"- Images: {missing.get('with_features', 0)} with features, {missing.get('missing', 0)} missing and "
        f"{missing.get('corrupt', 0)} corrupt (masked out, never replaced by a placeholder).\n"
        if missing
        else ""
    )
    return f"""
# MGCM multimodal NER ({names.dataset_name})

MGCM (multi-granularity cross-modality representation learning, Liu et al. 2022) tags PER, LOC, ORG and
MISC entities in a post from its words, its image, its detected objects and texts about it (an image
caption, LLM-written knowledge, ...).

- Corpus: `{run["dataset"]}`; text encoder: `{run["text_model"]}`; vision backbone:
  `{run.get("vision_model") or "none"}`.
- Granularities: {granularities}; semantic augmentation: `{run["augmentation_mode"]}`; word shape:
  {"on" if run["use_word_shape"] else "off"}; auxiliary span loss weight: {run["aux_span_loss_weight"]}.
- Trained {results["training"]["epochs_run"]} epoch(s), {results["training"]["optimizer_steps"]} optimizer steps,
  on {results["training"]["num_processes"]} process(es); the checkpoint kept is the epoch with the best
  **valid** lenient F1 (epoch {results["training"]["best_epoch"]}), never selected on test.
{image_line}{text_sources_section(results)}
## Results

Entity-level seqeval scores (%) on every split of the corpus. **lenient** is seqeval's default
(conlleval-like: an `I-` tag with no opening `B-` starts an entity), the convention of published
Twitter-2015/2017 numbers; **strict** is IOB2 strict mode. Every gold entity is scored, including those of
tweets longer than the model's window.

{results_table(results)}

## Use

```python
import modeling_mgcm, processing  # registers the MGCM classes
from transformers import AutoModelForTokenClassification, AutoProcessor

model = AutoModelForTokenClassification.from_pretrained("path/to/this/folder")
processor = AutoProcessor.from_pretrained("path/to/this/folder")
```
"""


def render_model_card(results: Mapping, names: CardNames | None = None) -> str:
    """The card of a training folder: metadata with the run's scores, and the body (which names the run's
    local folders and files, for reproducing it; `hub_export` writes a card without them)."""
    names = names or card_names(results)
    data = set_run_metadata(base_card_data(), results, names)
    return card_text(data, model_card_body(results, names))


__all__ = [
    "CARD_FILE",
    "CARD_METADATA",
    "CardNames",
    "RESULTS_FILE",
    "TWEET_CORPORA",
    "base_card_data",
    "card_names",
    "card_text",
    "dataset_names",
    "eval_results",
    "hub_model_id",
    "is_local_path",
    "model_card_body",
    "render_model_card",
    "results_table",
    "run_dataset",
    "set_run_metadata",
    "text_sources_section",
]
