"""Corpus statistics per split: tweets, tokens, entities per type, and the coverage of images, objects and
each text source (caption, knowledge, ...)."""

import math
from collections import Counter
from collections.abc import Mapping

from datasets import Dataset, Value
from seqeval.metrics.sequence_labeling import get_entities

from processing.corpus.labels import ENTITY_TYPES


def _split_stats(dataset: Dataset) -> dict:
    tag_names = dataset.features["ner_tags"].feature.names
    b_only: Counter = Counter()
    lenient: Counter = Counter()
    tokens = 0
    for tag_ids in dataset["ner_tags"]:
        tags = [tag_names[tag_id] for tag_id in tag_ids]
        tokens += len(tags)
        b_only.update(tag[2:] for tag in tags if tag.startswith("B-"))
        # seqeval's default reading, which conlleval and all published MNER scores share.
        lenient.update(entity_type for entity_type, _, _ in get_entities(tags))
    types = list(ENTITY_TYPES) + sorted((set(b_only) | set(lenient)) - set(ENTITY_TYPES))
    # Arrow access reads image paths and object lists without decoding a single image.
    arrow_rows = dataset.with_format("arrow")
    tweets = len(dataset)
    with_image = tweets - arrow_rows["image"].null_count
    # Every string column but the id is a text source (caption first, then knowledge, ...).
    text_sources = [
        name for name, feature in dataset.features.items() if feature == Value("string") and name != "id"
    ]
    with_text_sources = {
        name: sum(1 for text in arrow_rows[name].to_pylist() if text and text.strip())
        for name in text_sources
    }
    with_objects = sum(1 for objects in arrow_rows["objects"].to_pylist() if objects)
    return {
        "tweets": tweets,
        "tokens": tokens,
        "entities_b_only": {**{t: b_only[t] for t in types}, "total": sum(b_only.values())},
        "entities_lenient": {**{t: lenient[t] for t in types}, "total": sum(lenient.values())},
        "inside_tags_opening_entity": sum(lenient.values()) - sum(b_only.values()),
        "with_image": with_image,
        "missing_image": tweets - with_image,
        "with_caption": with_text_sources.get("caption", 0),
        "with_text_sources": with_text_sources,
        "with_objects": with_objects,
    }


def corpus_stats(dataset_dict: Mapping[str, Dataset]) -> dict[str, dict]:
    """Statistics of every split: {split: {"tweets", "tokens", "entities_b_only", "entities_lenient",
    "inside_tags_opening_entity", "with_image", "missing_image", "with_caption", "with_text_sources" (name ->
    tweets with a non-blank text of that source), "with_objects"}}.

    `entities_b_only` counts B- tags per type; `entities_lenient` counts entities as seqeval's default
    (lenient, conlleval-like) mode does, where an I- tag opening an entity starts one too.
    """
    return {split: _split_stats(dataset) for split, dataset in dataset_dict.items()}


def _percent(part: int, whole: int) -> str:
    # Rounded down, so that 3999 of 4000 does not read as 100.0%.
    return f"{part} ({math.floor(1000 * part / whole) / 10:.1f}%)" if whole else str(part)


def format_corpus_stats(stats: Mapping[str, Mapping]) -> str:
    """A plain-text table of `corpus_stats` output, one column per split."""
    splits = list(stats)
    rows: list[tuple[str, list[str]]] = [
        ("tweets", [str(stats[s]["tweets"]) for s in splits]),
        ("tokens", [str(stats[s]["tokens"]) for s in splits]),
    ]
    for key, title in (("entities_b_only", "entities, B- tags"), ("entities_lenient", "entities, lenient")):
        rows.append((title, ["" for _ in splits]))
        types = dict.fromkeys(t for s in splits for t in stats[s][key])
        rows += [(f"  {t}", [str(stats[s][key].get(t, 0)) for s in splits]) for t in types]
    rows += [
        ("I- tags opening an entity", [str(stats[s]["inside_tags_opening_entity"]) for s in splits]),
        ("missing image", [_percent(stats[s]["missing_image"], stats[s]["tweets"]) for s in splits]),
        *(
            (
                f"with {name}",
                [_percent(stats[s]["with_text_sources"].get(name, 0), stats[s]["tweets"]) for s in splits],
            )
            for name in dict.fromkeys(name for s in splits for name in stats[s]["with_text_sources"])
        ),
        ("with objects", [_percent(stats[s]["with_objects"], stats[s]["tweets"]) for s in splits]),
    ]
    label_width = max(len(label) for label, _ in rows)
    column_widths = [max(len(split), *(len(cells[i]) for _, cells in rows)) for i, split in enumerate(splits)]
    lines = [" " * label_width + "".join(f"  {s:>{w}}" for s, w in zip(splits, column_widths, strict=True))]
    for label, cells in rows:
        lines.append(
            f"{label:<{label_width}}"
            + "".join(f"  {c:>{w}}" for c, w in zip(cells, column_widths, strict=True))
        )
    return "\n".join(lines)


__all__ = ["corpus_stats", "format_corpus_stats"]
