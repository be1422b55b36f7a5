"""How an explanation's figure is laid out: its colours, its sizes in inches, and its text measured and
wrapped as the Agg renderer draws it. `figure_size` gives the figure's default size."""

import warnings
from typing import NamedTuple

from .records import ExplainedEntity, PostExplanation

# Granularity colours (Okabe-Ito, readable with colour blindness); other text sources take the rest of the
# palette in the model's order of its text sources.
GRANULARITY_COLOURS = {"image": "#0072B2", "objects": "#D55E00", "caption": "#009E73"}
_OTHER_SOURCE_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
ENTITY_TYPE_COLOURS = {"PER": "#E69F00", "LOC": "#56B4E9", "ORG": "#CC79A7", "MISC": "#F0E442"}
_EXTRA_TYPE_COLOURS = ("#999999", "#BBCC33", "#EE8866", "#77AADD", "#AAAA00")
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


__all__ = ["ENTITY_TYPE_COLOURS", "GRANULARITY_COLOURS", "figure_size"]
