"""What an explanation of one post holds, and `explain_post`, which builds it from the "multimodal-ner"
pipeline's own outputs (`aggregation="words", output_attentions=True`).

The post is checked, split into words, windowed, its image loaded and its entities merged exactly as the
pipeline does for any post; this module only averages the numbers over each entity's words.

Image regions: `extract_image_features` flattens a CNN feature map `(C, h, w)` row by row into `h*w`
regions and keeps a ViT/CLIP token sequence as it is, CLS token first. `image_region_grid` recovers the
grid from the number of regions `R` alone: it assumes the regions tile the processed image row-major,
optionally after one leading non-spatial token, and picks the factorisation closest to the image's
aspect ratio (see its docstring).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modeling_mgcm.pipeline_mgcm import MultimodalNERPipeline

# The keys every post may have; a post may also carry any other text source its processor reads. "words"
# stands for a "text" given as words, "id" titles the figure; the pipeline takes the others.
POST_KEYS = ("text", "words", "image", "caption", "objects", "id")
# A grid is accepted when its rows/columns ratio is within this factor of the image's aspect ratio.
_GRID_ASPECT_TOLERANCE = 1.3


@dataclass
class ExplainedEntity:
    """One predicted entity and what the model attended to while tagging it.

    Attributes:
        entity_group: the entity type ("PER", ...).
        word_start, word_end: its word span in the post, end exclusive.
        text: its span of the post's text (the original string, spaces included).
        score: mean CRF marginal probability of its Viterbi tags.
        gate_values: granularity -> mean gate value over its words, for the granularities the post has.
        attention: granularity -> mean attention of its words, `(R,)` over image regions (the leading
            non-spatial tokens included), `(num_objects,)` over the post's objects, and for each text source
            `(num_source_words,)` over that source's words (the rest of the mass is on its special tokens).
    """

    entity_group: str
    word_start: int
    word_end: int
    text: str
    score: float
    gate_values: dict[str, float] = field(default_factory=dict)
    attention: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class PostExplanation:
    """Everything `explain` draws, for one post.

    Attributes:
        text: the post's text (the words joined by spaces when the post gave words).
        words: its words; `word_offsets` their `(start, end)` character spans in `text`.
        tags: the Viterbi tag name of every word.
        tag_probabilities: `(W,)` CRF marginal probability of each word's tag.
        entities: the predicted entities, in text order.
        gate_values: granularity -> `(W,)` mean gate value of every word.
        attention: granularity -> `(W, N)` word attention, as in `ExplainedEntity.attention`.
        model_image: `(H, W, 3)` floats in [0, 1]: the image as the vision backbone saw it, or None.
        region_grid: `(leading_tokens, rows, columns)` of the image regions, or None.
        object_labels: the objects the model saw, in the order of their attention columns.
        source_texts: text source -> its text as far as the model read it ("…" marks a truncated one), for
            the sources with attention.
        source_words: text source -> its words, in the order of their attention columns.
        post_id: the post's "id", if it had one.
        granularities: the model's granularities in drawing order; text sources beyond the caption take
            their colours in this order.
        caption, caption_words: `source_texts` / `source_words` of the caption (None / [] without one).
    """

    text: str
    words: list[str]
    word_offsets: list[tuple[int, int]]
    tags: list[str]
    tag_probabilities: np.ndarray
    entities: list[ExplainedEntity]
    gate_values: dict[str, np.ndarray]
    attention: dict[str, np.ndarray]
    model_image: np.ndarray | None = None
    region_grid: tuple[int, int, int] | None = None
    object_labels: list[str] = field(default_factory=list)
    source_texts: dict[str, str] = field(default_factory=dict)
    source_words: dict[str, list[str]] = field(default_factory=dict)
    post_id: str | None = None
    granularities: list[str] = field(default_factory=list)

    @property
    def caption(self) -> str | None:
        return self.source_texts.get("caption")

    @property
    def caption_words(self) -> list[str]:
        return self.source_words.get("caption", [])


# --------------------------------------------------------------------------------------------------
# Inputs


def _pipeline_of(pipeline_or_model: Any, processor: Any) -> tuple[MultimodalNERPipeline, bool]:
    """The "multimodal-ner" pipeline to explain with (the one given, or one around the model and its
    processor), and whether its model was in training mode before (a new pipeline puts it in eval mode)."""
    if isinstance(pipeline_or_model, MultimodalNERPipeline) and processor is None:
        return pipeline_or_model, pipeline_or_model.model.training
    if isinstance(pipeline_or_model, tuple):
        if len(pipeline_or_model) != 2 or processor is not None:
            raise TypeError("pass a pipeline, a (model, processor) pair, or a model with processor=...")
        model, processor = pipeline_or_model
    elif not isinstance(pipeline_or_model, torch.nn.Module) and hasattr(pipeline_or_model, "model"):
        model = pipeline_or_model.model
        if processor is None:
            processor = getattr(pipeline_or_model, "processor", None)
    else:
        model = pipeline_or_model
    if getattr(getattr(model, "config", None), "model_type", None) != "mgcm" or not hasattr(model, "crf"):
        raise TypeError(
            f"explain needs an MGCM token-classification model (config.model_type 'mgcm'), got "
            f"{type(model).__name__}"
        )
    if processor is None or not callable(processor) or not hasattr(processor, "tokenizer"):
        raise TypeError(
            f"explain needs the model's MGCMProcessor (pass a (model, processor) pair), got "
            f"{type(processor).__name__}"
        )
    training = model.training
    # Where the model is: without a device, a pipeline would move it to the first GPU.
    device = None if getattr(model, "hf_device_map", None) else model.device
    return MultimodalNERPipeline(model=model, processor=processor, device=device), training


def _pipeline_post(post: Any) -> tuple[Any, str | None]:
    """The post as the pipeline takes it, and its id: explain's `"words"` is the pipeline's `"text"` given
    as words, and `"id"` only titles the figure. The pipeline checks the rest."""
    if isinstance(post, str):
        return post, None
    if not isinstance(post, Mapping):
        raise TypeError(
            f"a post is a string or a dict with 'text' or 'words', and optional 'image', 'caption' (or another "
            f"text source), 'objects'; got {type(post).__name__}"
        )
    if "image_id" in post:
        raise ValueError(
            "explain draws the image itself: give the post's 'image' (a path, URL, bytes or PIL image), not "
            "its cached features' 'image_id'"
        )
    if ("text" in post) == ("words" in post):
        raise ValueError("a post needs exactly one of 'text' (a string) or 'words' (a list of strings)")
    post = dict(post)
    if "words" in post:
        words = post.pop("words")
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise TypeError(f"post['words'] must be a list of words, got {type(words).__name__}")
        post["text"] = list(words)
    post_id = post.pop("id", None)
    return post, None if post_id is None else str(post_id)


# --------------------------------------------------------------------------------------------------
# Computing the explanation


def image_region_grid(num_regions: int, image_height: int, image_width: int) -> tuple[int, int, int]:
    """Lay `num_regions` image region features out over the image: `(leading_tokens, rows, columns)`.

    Assumes the regions tile the processed image as a row-major grid (a CNN feature map flattened by
    `extract_image_features`), possibly after one leading non-spatial token (the CLS token of ViT and CLIP
    vision, which comes first). Of the factorisations rows x columns of `num_regions` and of
    `num_regions - 1`, it takes the one whose rows/columns ratio is closest to `image_height / image_width`
    (ties keep all regions), and refuses counts whose best grid is off by more than a factor 1.3.
    """
    if num_regions < 1 or image_height < 1 or image_width < 1:
        raise ValueError(
            f"need at least one region and a non-empty image, got {num_regions} regions and a "
            f"{image_height}x{image_width} image"
        )
    target = math.log(image_height / image_width)
    best = None
    for leading in (0, 1):
        count = num_regions - leading
        for rows in range(1, count + 1):
            if count % rows:
                continue
            distance = abs(math.log(rows / (count // rows)) - target)
            if best is None or distance < best[0] - 1e-9:
                best = (distance, leading, rows, count // rows)
    if best is None or best[0] > math.log(_GRID_ASPECT_TOLERANCE):
        raise ValueError(
            f"cannot lay {num_regions} image regions out as a grid over a {image_height}x{image_width} image "
            f"(nor {num_regions - 1} after a CLS token): the vision backbone's regions are not a row-major "
            "grid of the image's shape"
        )
    return best[1], best[2], best[3]


def _model_view(pixel_values: np.ndarray, image_processor: Any) -> np.ndarray:
    """`(3, H, W)` processed pixels -> `(H, W, 3)` in [0, 1], undoing the processor's normalisation."""
    pixels = pixel_values.astype(np.float64)
    mean = getattr(image_processor, "image_mean", None)
    std = getattr(image_processor, "image_std", None)
    normalised = getattr(image_processor, "do_normalize", False) and mean is not None and std is not None
    if normalised:
        pixels = pixels * np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        pixels = pixels + np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
    rescale = getattr(image_processor, "rescale_factor", None)
    if normalised and getattr(image_processor, "do_rescale", False) and rescale is not None:
        pixels = pixels / (float(rescale) * 255.0)
    else:
        # Unknown scaling: stretch to the displayable range rather than guess.
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return np.clip(pixels.transpose(1, 2, 0), 0.0, 1.0)


def explain_post(
    pipeline_or_model: Any,
    post: Mapping[str, Any] | str,
    processor: Any = None,
    image_timeout: float | None = None,
    max_image_bytes: int | None = None,
) -> PostExplanation:
    """Tag one post with the "multimodal-ner" pipeline and collect its per-word gate values, attention maps
    and entities (no drawing).

    Args:
        pipeline_or_model: an MGCM pipeline, a `(model, processor)` pair, or a model with `processor`. A
            pipeline's own options (`image_dir`, `knowledge_writer`, `on_bad_image`, ...) apply.
        post: a post as the pipeline takes it (`{"text": str | [str, ...]}` with optional `"image"`, a path,
            http(s) URL, bytes or PIL image, `"caption"` and the processor's other text sources, `"objects"`),
            or its text; besides, `"words"` (a list of words) may stand for `"text"`, and `"id"` titles the
            figure. Cached features (`"image_id"`) are refused: the figure draws the image.
        processor: the model's `MGCMProcessor`, when `pipeline_or_model` is a model.
        image_timeout, max_image_bytes: limits for fetching an image URL; None keeps the pipeline's (10 s and
            20 MiB unless it was made with others).

    Raises:
        ImageLoadError: the image is missing, cannot be fetched or cannot be decoded (naming it).
        TypeError, ValueError: a malformed post (naming the key and value), a post without words, or no MGCM
            model and processor.
    """
    tagger, was_training = _pipeline_of(pipeline_or_model, processor)
    post, post_id = _pipeline_post(post)
    try:
        output = tagger(
            post,
            aggregation="words",
            output_attentions=True,
            image_timeout=image_timeout,
            max_image_bytes=max_image_bytes,
        )
    finally:
        tagger.model.train(was_training)
    words = output["words"]
    if not words:
        raise ValueError(f"the post has no words to tag: {output['text']!r}")
    # The granularities the post has an input for; the pipeline gives the others a gate of 0.
    attended = output["attended"]
    explanation = PostExplanation(
        text=output["text"],
        words=[word["word"] for word in words],
        word_offsets=[(word["start"], word["end"]) for word in words],
        tags=[word["tag"] for word in words],
        tag_probabilities=np.array([word["score"] for word in words]),
        entities=[],
        gate_values={name: np.array([word["gates"][name] for word in words]) for name in attended},
        attention={name: np.array([word["attention"][name] for word in words]) for name in attended},
        object_labels=list(attended.get("objects", [])),
        post_id=post_id,
        granularities=list(tagger.granularities),
    )
    if "image" in attended:
        pixel_values = attended["image"]["pixel_values"].float().cpu().numpy()
        explanation.model_image = _model_view(pixel_values, tagger.processor.image_processor)
        explanation.region_grid = image_region_grid(
            explanation.attention["image"].shape[1], *pixel_values.shape[1:]
        )
    for name, source in attended.items():
        if name not in ("image", "objects"):
            explanation.source_words[name] = source["words"]
            explanation.source_texts[name] = (
                source["text"].rstrip() + " …" if source["truncated"] else source["text"]
            )
    for entity in output["entities"]:
        start, end = entity["word_start"], entity["word_end"]
        explanation.entities.append(
            ExplainedEntity(
                entity_group=entity["entity_group"],
                word_start=start,
                word_end=end,
                text=entity["word"],
                score=entity["score"],
                gate_values={
                    name: float(values[start:end].mean()) for name, values in explanation.gate_values.items()
                },
                attention={
                    name: values[start:end].mean(axis=0) for name, values in explanation.attention.items()
                },
            )
        )
    return explanation


__all__ = ["POST_KEYS", "ExplainedEntity", "PostExplanation", "explain_post", "image_region_grid"]
