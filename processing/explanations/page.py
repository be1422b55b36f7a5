"""Saving an explanation: its figure as a PNG and, beside it, a self-contained HTML page (the post with its
entities highlighted, the text sources whole, a table of entities and the PNG inlined)."""

import base64
import html
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from modeling_mgcm.atomic_files import write_bytes_atomically

from .figure_layout import _drawing_order, _type_colours
from .records import PostExplanation

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


__all__ = ["render_html", "save_explanation"]
