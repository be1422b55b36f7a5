"""Visual explanations of MGCM predictions: which granularity each entity leaned on, and where it looked.

`explain(pipeline_or_model, post)` tags one post and draws, for every predicted entity, the gate value of
each granularity (the weight of the direct word-to-visual attention branch against the coupled one) and
the entity words' attention over the image regions (a heatmap over the image the vision backbone saw),
over the detected objects and over the words of each text source (the caption, knowledge, ...). The
figure is a matplotlib `Figure` (Agg, no pyplot state); with `output_path` it is written as a PNG and as a
self-contained HTML page beside it.

The numbers are the "multimodal-ner" pipeline's own (`aggregation="words", output_attentions=True`): the
post is checked, split into words, windowed, its image loaded and its entities merged exactly as the
pipeline does for any post; this package only averages them over each entity's words and draws them.

- `records.py`: `PostExplanation` and `ExplainedEntity`, and `explain_post`, which builds them from the
  pipeline's outputs;
- `figure_layout.py`: the figure's colours and sizes, its text measured and wrapped, `figure_size`;
- `figure.py`: `draw_explanation`, the matplotlib figure;
- `page.py`: `save_explanation`, the PNG and the HTML page (`render_html`).
"""

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .figure import MAX_CAPTION_WORDS_DRAWN, MAX_SOURCE_WORDS_DRAWN, draw_explanation
from .figure_layout import ENTITY_TYPE_COLOURS, GRANULARITY_COLOURS, figure_size
from .page import _png_path, render_html, save_explanation
from .records import POST_KEYS, ExplainedEntity, PostExplanation, explain_post, image_region_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
