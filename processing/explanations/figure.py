"""Drawing an explanation as a matplotlib figure (Agg, no pyplot state): the highlighted post on top, then
one row per entity with its gate per granularity and its attention over the image regions, the objects and
the words of each text source."""

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .figure_layout import (
    _ENTITY_ROW_HEIGHT,
    _FOOTER_LINE_HEIGHT,
    _MARGIN,
    _PANEL_GAP,
    _SMALL_FONT_SIZE,
    _SMALL_LINE_HEIGHT,
    _TITLE_HEIGHT,
    _TWEET_FONT_SIZE,
    _TWEET_LINE_HEIGHT,
    _drawn_words,
    _granularity_colours,
    _Layout,
    _layout,
    _panel_kinds,
    _text_width,
    _type_colours,
    figure_size,
)
from .records import ExplainedEntity, PostExplanation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Words of a text source drawn per entity; longer texts keep their most attended words.
MAX_SOURCE_WORDS_DRAWN = 10
MAX_CAPTION_WORDS_DRAWN = MAX_SOURCE_WORDS_DRAWN  # the name before text sources


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


__all__ = ["MAX_CAPTION_WORDS_DRAWN", "MAX_SOURCE_WORDS_DRAWN", "draw_explanation"]
