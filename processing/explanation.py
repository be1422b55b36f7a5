"""Visual explanations of MGCM predictions: which granularity each entity leaned on, and where it looked.

`explain(pipeline_or_model, post)` tags one post and draws, for every predicted entity, the gate value of
each granularity (the weight of the direct word-to-visual attention branch against the coupled one) and
the entity words' attention over the image regions (a heatmap over the image the vision backbone saw),
over the detected objects and over the words of each text source (the caption, knowledge, ...). The
figure is a matplotlib `Figure` (Agg, no pyplot state); with `output_path` it is written as a PNG and as a
self-contained HTML page beside it.

The numbers are the "multimodal-ner" pipeline's own (`aggregation="words", output_attentions=True`): the
post is checked, split into words, windowed, its image loaded and its entities merged exactly as the
pipeline does for any post; this module only averages them over each entity's words and draws them.

Image regions: `extract_image_features` flattens a CNN feature map `(C, h, w)` row by row into `h*w`
regions and keeps a ViT/CLIP token sequence as it is, CLS token first. `image_region_grid` recovers the
grid from the number of regions `R` alone: it assumes the regions tile the processed image row-major,
optionally after one leading non-spatial token, and picks the factorisation closest to the image's
aspect ratio (see its docstring).
"""

import base64
import html
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from modeling_mgcm.atomic_files import write_bytes_atomically
from modeling_mgcm.pipeline_mgcm import MultimodalNERPipeline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Granularity colours (Okabe-Ito, readable with colour blindness); other text sources take the rest of the
# palette in the model's order of its text sources.
GRANULARITY_COLOURS = {"image": "#0072B2", "objects": "#D55E00", "caption": "#009E73"}
_OTHER_SOURCE_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
ENTITY_TYPE_COLOURS = {"PER": "#E69F00", "LOC": "#56B4E9", "ORG": "#CC79A7", "MISC": "#F0E442"}
_EXTRA_TYPE_COLOURS = ("#999999", "#BBCC33", "#EE8866", "#77AADD", "#AAAA00")
# The keys every post may have; a post may also carry any other text source its processor reads. "words"
# stands for a "text" given as words, "id" titles the figure; the pipeline takes the others.
POST_KEYS = ("text", "words", "image", "caption", "objects", "id")
# A grid is accepted when its rows/columns ratio is within this factor of the image's aspect ratio.
_GRID_ASPECT_TOLERANCE = 1.3
# Words of a text source drawn per entity; longer texts keep their most attended words.
MAX_SOURCE_WORDS_DRAWN = 10
MAX_CAPTION_WORDS_DRAWN = MAX_SOURCE_WORDS_DRAWN  # the name before text sources
# Figure lines per text source: longer texts (knowledge runs to hundreds of words) are cut there with " …";
# the HTML page gives them whole.
_MAX_SOURCE_DETAIL_LINES = 3

# Layout, in inches (the figure's size in pixels is its size in inches times `dpi`).
_MARGIN = 0.3
_TITLE_HEIGHT = 0.5
_TWEET_FONT_SIZE = 13.0
_TWEET_LINE_HEIGHT = 0.36
_SMALL_LINE_HEIGHT = 0.26
_ENTITY_ROW_HEIGHT = 2.4
_PANEL_GAP = 0.35
_SMALL_FONT_SIZE = 9.0
_FOOTER_LINE_HEIGHT = 0.22
# Text is measured without hinting; Agg's hinted glyphs come out up to ~5% wider at some resolutions.
_WRAP_SAFETY = 0.93


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


# --------------------------------------------------------------------------------------------------
# Drawing


def _type_colours(explanation: PostExplanation) -> dict[str, str]:
    types = sorted({entity.entity_group for entity in explanation.entities})
    extra = iter(_EXTRA_TYPE_COLOURS * (1 + len(types) // len(_EXTRA_TYPE_COLOURS)))
    return {name: ENTITY_TYPE_COLOURS.get(name) or next(extra) for name in types}


def _text_width(text: str, size: float) -> float:
    """Width of `text` in inches at font `size` points, as the Agg renderer will draw it."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        width = TextToPath().get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0]
    return width / 72.0


def _drawn_words(explanation: PostExplanation, entity: ExplainedEntity) -> str:
    # The figure lays words out itself: tabs and line breaks of the original text would upset it.
    return " ".join(explanation.words[entity.word_start : entity.word_end])


def _tweet_chunks(explanation: PostExplanation) -> list[tuple[str, str | None]]:
    """The post as `(text, entity type or None)` chunks: each entity is one chunk, other words one each."""
    entity_at = {entity.word_start: entity for entity in explanation.entities}
    chunks, word = [], 0
    while word < len(explanation.words):
        entity = entity_at.get(word)
        if entity is not None:
            chunks.append((_drawn_words(explanation, entity), entity.entity_group))
            word = entity.word_end
        else:
            chunks.append((explanation.words[word], None))
            word += 1
    return chunks


def _tweet_lines(
    chunks: list[tuple[str, str | None]], width: float
) -> list[list[tuple[str, str | None, float]]]:
    """Wrap chunks into lines no wider than `width` inches: lines of `(text, type, x offset)`."""
    space = _text_width("a a", _TWEET_FONT_SIZE) - _text_width("aa", _TWEET_FONT_SIZE)
    lines: list[list[tuple[str, str | None, float]]] = [[]]
    x = 0.0
    for text, entity_group in chunks:
        chunk_width = _text_width(text, _TWEET_FONT_SIZE)
        if entity_group is not None:
            # The small type tag drawn after the highlighted entity.
            chunk_width += _text_width(" " + entity_group, 0.6 * _TWEET_FONT_SIZE) + 0.08
        if lines[-1] and x + chunk_width > width:
            lines.append([])
            x = 0.0
        lines[-1].append((text, entity_group, x))
        x += chunk_width + space + (0.06 if entity_group is not None else 0.0)
    return lines


def _drawing_order(explanation: PostExplanation) -> list[str]:
    """The granularities in drawing order: the model's, or those the explanation holds if it has no list."""
    return explanation.granularities or list(
        dict.fromkeys([*explanation.gate_values, *explanation.attention])
    )


def _granularity_colours(explanation: PostExplanation) -> dict[str, str]:
    """Granularity -> bar colour: `GRANULARITY_COLOURS`, then the other text sources in drawing order."""
    others = [name for name in _drawing_order(explanation) if name not in GRANULARITY_COLOURS]
    cycle = len(_OTHER_SOURCE_COLOURS)
    return {
        **GRANULARITY_COLOURS,
        **{name: _OTHER_SOURCE_COLOURS[index % cycle] for index, name in enumerate(others)},
    }


def _panel_kinds(explanation: PostExplanation) -> list[str]:
    return ["entity"] + [name for name in _drawing_order(explanation) if name in explanation.attention]


def _wrapped(text: str, size: float, width: float, max_lines: int | None = None) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` inches at font `size`; beyond `max_lines`
    lines it is cut, the last line ending with " …"."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(lines[-1] + " " + word, size) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if max_lines is not None and len(lines) > max_lines:
        last = lines[max_lines - 1]
        while " " in last and _text_width(last + " …", size) > width:
            last = last.rsplit(" ", 1)[0]
        lines = [*lines[: max_lines - 1], last + " …"]
    return lines


def _detail_lines(explanation: PostExplanation, width: float) -> list[str]:
    """The objects and each text source the figure has panels for, in drawing order, wrapped to `width`."""
    lines = []
    for name in _panel_kinds(explanation):
        if name == "objects":
            lines += _wrapped("objects: " + ", ".join(explanation.object_labels), _SMALL_FONT_SIZE, width)
        elif name in explanation.source_texts:
            text = f"{name}: {explanation.source_texts[name]}"
            lines += _wrapped(text, _SMALL_FONT_SIZE, width, max_lines=_MAX_SOURCE_DETAIL_LINES)
    return lines


class _Layout(NamedTuple):
    tweet_lines: list  # lines of (text, entity type or None, x offset in inches)
    detail_lines: list[str]  # the objects and the text sources, wrapped
    header_height: float
    entity_rows: int
    footer_lines: list[str]


def _layout(explanation: PostExplanation, width: float, max_entities: int, note: str | None) -> _Layout:
    """Where things go in a figure `width` inches wide."""
    text_width = _WRAP_SAFETY * (width - 2 * _MARGIN)
    tweet_lines = _tweet_lines(_tweet_chunks(explanation), text_width)
    details = _detail_lines(explanation, text_width)
    # Title, tweet lines, the type legend and the details.
    header = _TITLE_HEIGHT + len(tweet_lines) * _TWEET_LINE_HEIGHT + (1 + len(details)) * _SMALL_LINE_HEIGHT
    rows = min(len(explanation.entities), max_entities)
    footer = []
    if len(explanation.entities) > rows:
        footer.append(f"{len(explanation.entities) - rows} more entities are listed in the HTML page.")
    if note:
        footer += _wrapped(note, _SMALL_FONT_SIZE, text_width)
    return _Layout(tweet_lines, details, header + 0.2, rows, footer)


def figure_size(
    explanation: PostExplanation, width: float = 12.0, max_entities: int = 6, note: str | None = None
) -> tuple[float, float]:
    """The default `(width, height)` in inches of `draw_explanation`'s figure for this explanation."""
    layout = _layout(explanation, width, max_entities, note)
    footer = len(layout.footer_lines) * _FOOTER_LINE_HEIGHT
    return width, layout.header_height + layout.entity_rows * _ENTITY_ROW_HEIGHT + footer + 0.1


def _draw_header(figure, explanation: PostExplanation, layout: _Layout, colours: dict[str, str]) -> None:
    """Title, the highlighted tweet, the type legend, the objects and the text sources, from the top down."""
    inches = figure.dpi_scale_trans
    top = figure.get_size_inches()[1]
    title = "MGCM explanation" + (f": post {explanation.post_id}" if explanation.post_id else "")
    figure.text(_MARGIN, top - 0.35, title, transform=inches, fontsize=14, fontweight="bold")
    y = top - _TITLE_HEIGHT - _TWEET_LINE_HEIGHT * 0.7
    for line in layout.tweet_lines:
        for text, entity_group, x in line:
            if entity_group is None:
                figure.text(_MARGIN + x, y, text, transform=inches, fontsize=_TWEET_FONT_SIZE)
                continue
            figure.text(
                _MARGIN + x,
                y,
                text,
                transform=inches,
                fontsize=_TWEET_FONT_SIZE,
                bbox={"boxstyle": "round,pad=0.18", "facecolor": colours[entity_group], "edgecolor": "none"},
            )
            figure.text(
                _MARGIN + x + _text_width(text, _TWEET_FONT_SIZE) + 0.1,
                y,
                entity_group,
                transform=inches,
                fontsize=0.6 * _TWEET_FONT_SIZE,
                fontweight="bold",
                color="#333333",
            )
        y -= _TWEET_LINE_HEIGHT
    y -= 0.05
    legend = "entity types:" if colours else "no entity predicted"
    figure.text(_MARGIN, y, legend, transform=inches, fontsize=_SMALL_FONT_SIZE, color="#333333")
    x = _MARGIN + _text_width(legend, _SMALL_FONT_SIZE) + 0.15
    for name, colour in colours.items():
        figure.text(
            x,
            y,
            name,
            transform=inches,
            fontsize=_SMALL_FONT_SIZE,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": colour, "edgecolor": "none"},
        )
        x += _text_width(name, _SMALL_FONT_SIZE) + 0.3
    for line in layout.detail_lines:
        y -= _SMALL_LINE_HEIGHT
        figure.text(_MARGIN, y, line, transform=inches, fontsize=_SMALL_FONT_SIZE, color="#333333")


def _axes(figure, left: float, bottom: float, width: float, height: float):
    """Axes placed in inches from the figure's bottom-left corner."""
    figure_width, figure_height = figure.get_size_inches()
    return figure.add_axes(
        (left / figure_width, bottom / figure_height, width / figure_width, height / figure_height)
    )


def _style_bar_axes(axes) -> None:
    axes.tick_params(axis="x", labelsize=7)
    for spine in ("top", "right"):
        axes.spines[spine].set_visible(False)


def _bar_panel(axes, labels: list[str], values: np.ndarray, colour: str, title: str) -> None:
    """Horizontal bars of attention weights, first label on top, scaled to the largest weight."""
    positions = np.arange(len(labels))
    axes.barh(positions, values, color=colour, height=0.7)
    # Labels no taller than three quarters of a bar's share of the panel, so that they never overlap.
    panel_points = 72.0 * axes.get_position().height * axes.figure.get_figheight()
    axes.set_yticks(positions, labels, fontsize=min(8.0, 0.75 * panel_points / max(1, len(labels))))
    axes.invert_yaxis()
    # Weights are at most 1; room for the longest bar, without an axis that runs past 1.
    axes.set_xlim(0.0, min(1.0, max(1e-6, float(values.max()) * 1.25)) if len(values) else 1.0)
    axes.set_title(title, fontsize=9, loc="left")
    _style_bar_axes(axes)


def _gate_panel(axes, entity: ExplainedEntity, colours: dict[str, str]) -> None:
    names = list(entity.gate_values)
    if not names:
        axes.axis("off")
        axes.text(
            0.0, 0.5, "text only: no image, objects\nor other text, so no gates", fontsize=9, va="center"
        )
        return
    values = np.array([entity.gate_values[name] for name in names])
    positions = np.arange(len(names))
    axes.barh(positions, values, color=[colours[name] for name in names], height=0.6)
    axes.set_yticks(positions, names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    for position, value in zip(positions, values, strict=True):
        axes.text(min(value + 0.02, 0.82), position, f"{value:.2f}", va="center", fontsize=8)
    axes.set_title("gate per granularity", fontsize=9, loc="left")
    _style_bar_axes(axes)


def _image_panel(axes, explanation: PostExplanation, entity: ExplainedEntity) -> None:
    """The image the backbone saw, tinted where the entity's attention over the region grid is highest."""
    leading, rows, columns = explanation.region_grid
    regions = entity.attention["image"]
    grid = regions[leading:].reshape(rows, columns)
    height, width = explanation.model_image.shape[:2]
    extent = (0, width, height, 0)
    axes.imshow(explanation.model_image, extent=extent, interpolation="bilinear")
    low, high = float(grid.min()), float(grid.max())
    # Stretched between the grid's own extremes, so that structure shows even in near-uniform attention;
    # the title gives the actual range against the uniform 1/R.
    relative = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
    from matplotlib import colormaps

    heat = colormaps["inferno"](relative)
    heat[..., 3] = 0.15 + 0.6 * relative
    axes.imshow(heat, extent=extent, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    title = f"attention over {rows}x{columns} image regions\n{low:.4f}-{high:.4f} (uniform {1 / len(regions):.4f})"
    if leading:
        title += f", CLS {regions[:leading].sum():.2f}"
    axes.set_title(title, fontsize=8, loc="left")


def _bars(
    explanation: PostExplanation, entity: ExplainedEntity, name: str
) -> tuple[list[str], np.ndarray, str]:
    """Labels, weights and title of the entity's bar panel over the objects or a text source's words."""
    values = entity.attention[name]
    if name == "objects":
        return explanation.object_labels, values, "attention over objects"
    words = explanation.source_words[name]
    title = f"attention over {name} words"
    if len(words) <= MAX_SOURCE_WORDS_DRAWN:
        return words, values, title
    shown = np.sort(np.argsort(-values, kind="stable")[:MAX_SOURCE_WORDS_DRAWN])
    title += f" (top {MAX_SOURCE_WORDS_DRAWN} of {len(words)})"
    return [words[index] for index in shown], values[shown], title


def _draw_entity_row(
    figure, explanation: PostExplanation, entity: ExplainedEntity, colour: str, bottom: float
) -> None:
    """One row: the entity and its gates, then its attention over the image, the objects and the text sources."""
    inches = figure.dpi_scale_trans
    top = bottom + _ENTITY_ROW_HEIGHT
    words = _drawn_words(explanation, entity)
    figure.text(
        _MARGIN,
        top - 0.3,
        words,
        transform=inches,
        fontsize=11,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.15", "facecolor": colour, "edgecolor": "none"},
    )
    figure.text(
        _MARGIN + _text_width(words, 11) + 0.2,
        top - 0.3,
        f"{entity.entity_group}, score {entity.score:.2f}, words {entity.word_start}-{entity.word_end - 1}",
        transform=inches,
        fontsize=9,
    )
    kinds = _panel_kinds(explanation)
    colours = _granularity_colours(explanation)
    bars = {kind: _bars(explanation, entity, kind) for kind in kinds if kind not in ("entity", "image")}
    panel_bottom = bottom + 0.3
    panel_height = _ENTITY_ROW_HEIGHT - 1.05
    # Room left of each bar panel for its tick labels, as wide as the longest one.
    tick_labels = {"entity": list(entity.gate_values), "image": []}
    tick_labels.update({kind: labels for kind, (labels, _, _) in bars.items()})
    label_width = {
        kind: max((_text_width(label, 8) for label in labels), default=0.0) + (0.15 if labels else 0.0)
        for kind, labels in tick_labels.items()
    }
    # Text sources get wider panels than the gates and the objects.
    share = {kind: 1.0 if kind in ("entity", "objects") else 1.3 for kind in kinds}
    image_width = panel_height + 0.4  # Room for the two-line title over the square image.
    free = figure.get_size_inches()[0] - 2 * _MARGIN - _PANEL_GAP * (len(kinds) - 1)
    free -= sum(label_width[kind] for kind in kinds) + (image_width if "image" in kinds else 0.0)
    total_share = sum(share[kind] for kind in kinds if kind != "image")
    x = _MARGIN
    for kind in kinds:
        x += label_width[kind]
        width = image_width if kind == "image" else free * share[kind] / total_share
        if kind == "image":
            axes = _axes(figure, x, panel_bottom - 0.15, panel_height + 0.15, panel_height + 0.15)
            _image_panel(axes, explanation, entity)
        else:
            axes = _axes(figure, x, panel_bottom, width, panel_height)
            if kind == "entity":
                _gate_panel(axes, entity, colours)
            else:
                labels, values, title = bars[kind]
                _bar_panel(axes, labels, values, colours[kind], title)
        x += width + _PANEL_GAP


def draw_explanation(
    explanation: PostExplanation,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100.0,
    max_entities: int = 6,
    note: str | None = None,
) -> "Figure":
    """Draw an explanation: the highlighted post on top, then one row per entity (at most `max_entities`),
    then `note` (e.g. which model made it), if any.

    Returns a `matplotlib.figure.Figure` on an Agg canvas; its pixel size is `figsize * dpi`, with `figsize`
    by default `figure_size(explanation, max_entities=max_entities, note=note)` (12 inches wide, taller with
    more entities and text lines).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(max_entities, bool) or not isinstance(max_entities, int) or max_entities < 1:
        raise ValueError(f"max_entities must be an integer >= 1, got {max_entities!r}")
    if not (isinstance(dpi, int | float) and math.isfinite(dpi) and dpi > 0):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")
    if note is not None and not isinstance(note, str):
        raise TypeError(f"note must be a string, got {type(note).__name__}")
    if figsize is None:
        figsize = figure_size(explanation, max_entities=max_entities, note=note)
    if len(figsize) != 2 or not all(
        isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in figsize
    ):
        raise ValueError(f"figsize must be two positive numbers of inches, got {figsize!r}")
    width, height = figsize
    figure = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    colours = _type_colours(explanation)
    layout = _layout(explanation, width, max_entities, note)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        _draw_header(figure, explanation, layout, colours)
        for row, entity in enumerate(explanation.entities[: layout.entity_rows]):
            bottom = height - layout.header_height - (row + 1) * _ENTITY_ROW_HEIGHT
            _draw_entity_row(figure, explanation, entity, colours[entity.entity_group], bottom)
        y = height - layout.header_height - layout.entity_rows * _ENTITY_ROW_HEIGHT
        for line in layout.footer_lines:
            y -= _FOOTER_LINE_HEIGHT
            figure.text(
                _MARGIN,
                y,
                line,
                transform=figure.dpi_scale_trans,
                fontsize=_SMALL_FONT_SIZE,
                color="#333333",
            )
    return figure


# --------------------------------------------------------------------------------------------------
# Saving


def render_html(explanation: PostExplanation, png: bytes, note: str | None = None) -> str:
    """A self-contained HTML page: the post with its entities highlighted, the text sources the model read
    (whole, where the figure cuts long ones), a table of entities, `note`, and the figure (`png`, inlined as
    base64)."""
    colours = _type_colours(explanation)
    parts, position = [], 0
    for entity in explanation.entities:
        start = explanation.word_offsets[entity.word_start][0]
        end = explanation.word_offsets[entity.word_end - 1][1]
        parts.append(html.escape(explanation.text[position:start]))
        parts.append(
            f'<mark style="background:{colours[entity.entity_group]}" '
            f'title="{entity.entity_group}, score {entity.score:.2f}">{html.escape(explanation.text[start:end])}'
            f"<sup>{entity.entity_group}</sup></mark>"
        )
        position = end
    parts.append(html.escape(explanation.text[position:]))
    legend = " ".join(
        f'<mark style="background:{colour}">{html.escape(name)}</mark>' for name, colour in colours.items()
    )
    granularities = list(explanation.gate_values)
    header_cells = "".join(f"<th>gate {html.escape(name)}</th>" for name in granularities)
    rows = []
    for entity in explanation.entities:
        gates = "".join(f"<td>{entity.gate_values[name]:.3f}</td>" for name in granularities)
        rows.append(
            f"<tr><td>{html.escape(entity.text)}</td><td>{html.escape(entity.entity_group)}</td>"
            f"<td>{entity.word_start}-{entity.word_end - 1}</td><td>{entity.score:.3f}</td>{gates}</tr>"
        )
    table = (
        f"<table><tr><th>entity</th><th>type</th><th>words</th><th>score</th>{header_cells}</tr>{''.join(rows)}</table>"
        if rows
        else "<p>No entity predicted.</p>"
    )
    title = "MGCM explanation" + (f": post {explanation.post_id}" if explanation.post_id else "")
    image = base64.b64encode(png).decode("ascii")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head>\n<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1250px;margin:1em auto;padding:0 1em}"
        "p.post{font-size:1.3em;line-height:1.8}mark{padding:0.1em 0.25em;border-radius:0.25em}"
        "sup{font-size:0.6em;font-weight:bold;margin-left:0.2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}img{max-width:100%}</style>",
        "</head>\n<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="post">{"".join(parts)}</p>',
        *(
            f'<p class="source"><b>{html.escape(name)}</b>: {html.escape(explanation.source_texts[name])}</p>'
            for name in _drawing_order(explanation)
            if name in explanation.source_texts
        ),
        f"<p>Entity types: {legend or 'none'}</p>",
        "<p>Gate: the mean weight of the direct word-to-input attention branch against the coupled branch, "
        "over the entity's words.</p>",
        table,
    ]
    if note:
        page.append(f"<p>{html.escape(note)}</p>")
    page += [
        f'<p><img alt="{html.escape(title)}: gates and attention maps" src="data:image/png;base64,{image}"></p>',
        "</body>\n</html>\n",
    ]
    return "\n".join(page)


def _png_path(output_path: str | os.PathLike) -> Path:
    png_path = Path(output_path)
    if png_path.suffix.lower() != ".png":
        raise ValueError(f"output_path must name a .png file, got {str(output_path)!r}")
    if not png_path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {png_path}: the folder {png_path.parent} does not exist")
    return png_path


def save_explanation(
    figure: "Figure", explanation: PostExplanation, output_path: str | os.PathLike, note: str | None = None
) -> tuple[Path, Path]:
    """Write `figure` as `output_path` (.png) and the HTML page beside it (.html), each atomically."""
    png_path = _png_path(output_path)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # DejaVu has no emoji: they are drawn as boxes, which is all a missing glyph can be.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", dpi=figure.dpi, facecolor="white")
    png = buffer.getvalue()
    html_path = png_path.with_suffix(".html")
    write_bytes_atomically(png_path, png)
    write_bytes_atomically(html_path, render_html(explanation, png, note=note).encode("utf-8"))
    return png_path, html_path


def explain(
    pipeline_or_model: Any,
    post: Mapping[str, Any] | str,
    output_path: str | os.PathLike | None = None,
    *,
    processor: Any = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100.0,
    max_entities: int = 6,
    note: str | None = None,
    image_timeout: float | None = None,
    max_image_bytes: int | None = None,
) -> "Figure":
    """Explain the model's entities in one post as a figure, optionally saved as PNG + HTML.

    Args:
        pipeline_or_model: an MGCM pipeline, a `(model, processor)` pair, or a model with `processor`.
        post: a post as `explain_post` takes it. Inputs the model's config does not use are left out; a post
            without an image has no image panel.
        output_path: a `.png` path in an existing folder; the HTML page (highlighted post, entity table
            and the PNG inlined as base64) is written beside it with the suffix `.html`.
        processor: the `MGCMProcessor`, when `pipeline_or_model` is a bare model.
        figsize, dpi, max_entities: see `draw_explanation`.
        note: a line for the figure's foot and the HTML page, e.g. which model made the explanation.
        image_timeout, max_image_bytes: limits for fetching an image URL (None: the pipeline's).

    Returns:
        The `matplotlib.figure.Figure` (`explain_post` gives the numbers behind it).
    """
    if output_path is not None:
        _png_path(output_path)
    explanation = explain_post(
        pipeline_or_model,
        post,
        processor=processor,
        image_timeout=image_timeout,
        max_image_bytes=max_image_bytes,
    )
    figure = draw_explanation(explanation, figsize=figsize, dpi=dpi, max_entities=max_entities, note=note)
    if output_path is not None:
        save_explanation(figure, explanation, output_path, note=note)
    return figure


__all__ = [
    "ENTITY_TYPE_COLOURS",
    "GRANULARITY_COLOURS",
    "MAX_CAPTION_WORDS_DRAWN",
    "MAX_SOURCE_WORDS_DRAWN",
    "POST_KEYS",
    "ExplainedEntity",
    "PostExplanation",
    "draw_explanation",
    "explain",
    "explain_post",
    "figure_size",
    "image_region_grid",
    "render_html",
    "save_explanation",
]
