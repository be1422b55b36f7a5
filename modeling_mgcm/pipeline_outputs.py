"""The "multimodal-ner" pipeline's outputs, from the model's tensors to what a post gets back.

- `attended_inputs`: what the attention columns of each granularity are for one post (its image, the objects
  the processor kept, the words of each text source as the model read them);
- `window_words`: one window's outputs (a row of the pipeline's `_forward`) -> per word, its tag, marginals,
  gates and attention rows (`WordOutput`);
- `merge_post_windows`: a post's windows merged into one record per word (`merge_windows`);
- `aggregate_post`: that record -> the post's entities (its BIO tags read by `lenient_entity_spans`), or with
  `aggregation="words"` its per-word record, with `output_attentions` each word's attention over the post's
  inputs.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .pipeline_posts import PreparedPost
from .windows import merge_windows


class WordOutput(NamedTuple):
    """What the model gave one word of a window."""

    tag: int  # Viterbi tag id
    marginals: list[float]  # over the labels
    gates: list[float]  # per granularity, in the config's order
    # With `output_attentions`: granularity -> weights over the model batch's (padded) columns of that input.
    attention: dict[str, list[float]]


WindowOutput = list[WordOutput]


def lenient_entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of BIO tags as (type, first word, one past the last word), read as seqeval's default mode.

    An `I-` tag after `O` or after another type opens an entity. Our own few lines rather than seqeval's
    `get_entities`, whose import pulls in scikit-learn: the pipeline ships as remote code and must not need it.
    """
    spans, start, entity_type = [], None, None
    for position, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-")
        if prefix == "I" and start is not None and tag_type == entity_type:
            continue
        if start is not None:
            spans.append((entity_type, start, position))
        start, entity_type = (position, tag_type) if prefix in ("B", "I") else (None, None)
    return spans


def attended_inputs(
    post: Mapping[str, Any], prepared: PreparedPost, processor: Any, granularities: Sequence[str]
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """What the attention columns of each granularity the post has an input for are (the `"attended"` of
    the pipeline's module docstring), and per text source the index of the word of each of its pieces (-1
    for a special token). `post` is the raw post, `prepared` the post as `MultimodalNERPipeline.prepare_post`
    prepared it with `processor`, its windows encoded."""
    # Every window of a post carries the same image, objects and texts.
    window = prepared.windows[0]
    attended: dict[str, Any] = {}
    piece_words: dict[str, list[int]] = {}
    for name in granularities:
        if name == "image":
            if prepared.pixel_values is not None or prepared.image_features is not None:
                attended[name] = {"pixel_values": prepared.pixel_values}
        elif name == "objects":
            if window.get("object_ids"):
                attended[name] = [processor.object_labels[index] for index in window["object_ids"]]
        elif window.get(f"{name}_input_ids"):
            attended[name], piece_words[name] = _source_words(
                processor, name, post[name], window[f"{name}_input_ids"]
            )
    return attended, piece_words


def _source_words(
    processor: Any, name: str, text: str, source_ids: list[int]
) -> tuple[dict[str, Any], list[int]]:
    """`{"text", "words", "truncated"}` of text source `name` as the model read it (`source_ids`, the
    processor's pieces of `text`), and the index of the word of each piece (-1 for a special token)."""
    # The processor encodes the source without offsets; the same call with them locates its words.
    encoding = processor.tokenizer(
        text,
        truncation=True,
        max_length=processor.text_source_max_lengths[name],
        return_offsets_mapping=True,
        return_attention_mask=False,
    )
    if list(encoding["input_ids"]) != list(source_ids):
        raise RuntimeError(f"the {name} text tokenised differently than in the processor's encoding")
    spans: list[list[int]] = []
    index_of_word: dict[int, int] = {}
    piece_words = []
    for piece, word in enumerate(encoding.word_ids()):
        if word is None:
            piece_words.append(-1)
            continue
        start, end = encoding["offset_mapping"][piece]
        if word not in index_of_word:
            index_of_word[word] = len(spans)
            spans.append([start, end])
        span = spans[index_of_word[word]]
        span[0], span[1] = min(span[0], start), max(span[1], end)
        piece_words.append(index_of_word[word])
    read = text[: spans[-1][1]] if spans else ""
    words = [text[start:end] for start, end in spans]
    return {"text": read, "words": words, "truncated": read.strip() != text.strip()}, piece_words


def window_words(output: Mapping[str, Any]) -> WindowOutput:
    """One window's outputs -> per word, its Viterbi tag, marginal vector, gate vector and attention rows.

    `output` is a row of `MultimodalNERPipeline._forward`'s outputs: `predictions` (1, W), `marginals`
    (1, W, L), `gates` (1, W, G) (the config's granularities), `word_mask` (1, W), and with
    `output_attentions` `granularity_attentions`, granularity -> (W, N). W counts the model batch's padded
    words; the window's own come first.
    """
    count = int(output["word_mask"][0].sum())
    tags = output["predictions"][0, :count].tolist()
    marginals = output["marginals"][0, :count].tolist()
    gates = output["gates"][0, :count].tolist()
    attention = {
        name: weights[:count].tolist()
        for name, weights in (output.get("granularity_attentions") or {}).items()
    }
    return [
        WordOutput(
            tags[word], marginals[word], gates[word], {name: rows[word] for name, rows in attention.items()}
        )
        for word in range(count)
    ]


def merge_post_windows(
    post: PreparedPost, windows: Sequence[WindowOutput], window_indices: Sequence[int]
) -> dict[str, Any]:
    """The per-word tags, marginals, gates and attention of one post, its windows merged, with its text, word
    offsets and attended inputs; `windows[i]` holds the words of `post.windows[window_indices[i]]`."""
    result = {
        "text": post.text,
        "words": post.words,
        "spans": post.spans,
        "image_error": post.image_error,
        "attended": post.attended,
        "piece_words": post.piece_words,
        "tags": [],
        "marginals": [],
        "gates": [],
        "attention": [],
    }
    if not post.windows:
        return result
    if sorted(window_indices) != list(range(len(post.windows))):
        raise RuntimeError(
            f"a post of {len(post.windows)} windows got the outputs of windows {list(window_indices)}"
        )
    offsets = [post.windows[index]["window_word_offset"] for index in window_indices]
    counts = [len(window) for window in windows]
    merged = merge_windows(windows, [0] * len(windows), offsets, counts, num_words=[len(post.words)])[0]
    result["tags"] = [record.tag for record in merged]
    result["marginals"] = [record.marginals for record in merged]
    result["gates"] = [record.gates for record in merged]
    result["attention"] = [record.attention for record in merged]
    return result


def _attention_over_inputs(
    weights: Mapping[str, list[float]], attended: Mapping[str, Any], piece_words: Mapping[str, list[int]]
) -> dict[str, list[float]]:
    """One word's attention rows (padded to its model batch) -> its weights over each attended input's
    columns: the image regions, the post's objects, a text source's words (each the sum of its pieces)."""
    result = {}
    for name, columns in attended.items():
        values = weights[name]
        if name == "image":
            result[name] = values
        elif name == "objects":
            result[name] = values[: len(columns)]
        else:
            summed = [0.0] * len(columns["words"])
            pieces = piece_words[name]
            for value, word in zip(values[: len(pieces)], pieces, strict=True):
                if word >= 0:
                    summed[word] += value
            result[name] = summed
    return result


def aggregate_post(
    post_outputs: Mapping[str, Any],
    id2label: Mapping[int, str],
    granularities: Sequence[str],
    aggregation: str = "entities",
    output_attentions: bool = False,
) -> Any:
    """Per-post merged outputs (`merge_post_windows`) -> entities (or, with `aggregation="words"`, the
    per-word record, with `output_attentions` each word's attention and the post's attended inputs); tags
    are named by `id2label`, gates by `granularities` (the config's order)."""
    text, spans = post_outputs["text"], post_outputs["spans"]
    tag_names = [id2label[tag] for tag in post_outputs["tags"]]
    word_scores = [
        marginal[tag] for marginal, tag in zip(post_outputs["marginals"], post_outputs["tags"], strict=True)
    ]
    entities = []
    for entity_type, word_start, word_end in lenient_entity_spans(tag_names):
        start, end = spans[word_start][0], spans[word_end - 1][1]
        entities.append(
            {
                "entity_group": entity_type,
                "word": text[start:end],
                "start": start,
                "end": end,
                "score": math.fsum(word_scores[word_start:word_end]) / (word_end - word_start),
                "word_start": word_start,
                "word_end": word_end,
            }
        )
    if aggregation == "entities":
        return entities
    label_names = [id2label[index] for index in range(len(id2label))]
    words = [
        {
            "word": word,
            "start": start,
            "end": end,
            "tag": tag_name,
            "score": score,
            "marginals": dict(zip(label_names, marginal, strict=True)),
            "gates": dict(zip(granularities, gates, strict=True)),
        }
        for word, (start, end), tag_name, score, marginal, gates in zip(
            post_outputs["words"],
            spans,
            tag_names,
            word_scores,
            post_outputs["marginals"],
            post_outputs["gates"],
            strict=True,
        )
    ]
    result = {
        "text": text,
        "words": words,
        "entities": entities,
        "image_error": post_outputs["image_error"],
    }
    if output_attentions:
        attended, piece_words = post_outputs["attended"], post_outputs["piece_words"]
        for word, weights in zip(words, post_outputs["attention"], strict=True):
            word["attention"] = _attention_over_inputs(weights, attended, piece_words)
        result["attended"] = attended
    return result


__all__ = [
    "WindowOutput",
    "WordOutput",
    "aggregate_post",
    "attended_inputs",
    "lenient_entity_spans",
    "merge_post_windows",
    "window_words",
]
