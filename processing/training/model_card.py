"""The model card (`README.md`) of a trained MGCM folder, filled from the run's `results.json`."""

from collections.abc import Mapping

from processing.corpus.labels import ENTITY_TYPES

# Files of a trained folder: the run's scores and settings, which the card is filled from, and the card.
RESULTS_FILE = "results.json"
CARD_FILE = "README.md"
# The Hub metadata every MGCM card opens with: the library, the task and the tags the Hub lists it under.
CARD_METADATA = """---
library_name: transformers
pipeline_tag: token-classification
tags:
- mgcm
- multimodal-ner
- named-entity-recognition
---
"""


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


def render_model_card(results: Mapping) -> str:
    """The card's Markdown text: what the model is, how it was trained and selected, and its scores."""
    run = results["run"]
    granularities = ", ".join(run["granularities"]) or "none (text only)"
    missing = results.get("images", {})
    image_line = (
        f"- Images: {missing.get('with_features', 0)} with features, {missing.get('missing', 0)} missing and "
        f"{missing.get('corrupt', 0)} corrupt (masked out, never replaced by a placeholder).\n"
        if missing
        else ""
    )
    return f"""{CARD_METADATA}
# MGCM multimodal NER ({run["dataset"]})

MGCM (multi-granularity cross-modality representation learning, Liu et al. 2022) tags PER, LOC, ORG and
MISC entities in a post from its words, its image, its detected objects and texts about it (an image
caption, LLM-written knowledge, ...).

- Text encoder: `{run["text_model"]}`; vision backbone: `{run.get("vision_model") or "none"}`.
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


__all__ = [
    "CARD_FILE",
    "CARD_METADATA",
    "RESULTS_FILE",
    "render_model_card",
    "results_table",
    "text_sources_section",
]
