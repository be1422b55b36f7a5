"""A split's predicted tags beside its words and gold tags, as a file to read, diff or score again.

One word a line, `word<TAB>gold<TAB>predicted`, a `# id = <post id>` line before each post and a blank line
after it (the CoNLL-U comment convention), so `grep`, `paste` and conlleval-style scorers read it as it is.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from modeling_mgcm.atomic_files import write_text_atomically


def format_predictions(
    split: datasets.Dataset, predicted_tag_ids: Sequence[Sequence[int]], id2label: Mapping
) -> str:
    """The file's text for `split` (rows with `id`, `tokens`, `ner_tags`) and one list of tag ids per post."""
    names = {int(index): name for index, name in id2label.items()}
    lines = []
    for row, predicted in zip(split, predicted_tag_ids, strict=True):
        lines.append(f"# id = {row['id']}")
        lines.extend(
            f"{word}\t{names[int(gold)]}\t{names[int(tag)]}"
            for word, gold, tag in zip(row["tokens"], row["ner_tags"], predicted, strict=True)
        )
        lines.append("")
    return "\n".join(lines) + "\n" if lines else ""


def read_predictions(path: str | os.PathLike) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """A file of `format_predictions` back: post id -> (words, gold tags, predicted tags)."""
    posts, current = {}, None
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("# id = "):
            post_id = line.removeprefix("# id = ")
            if post_id in posts:
                raise ValueError(f"{path}, line {number}: post id {post_id!r} is there twice")
            current = posts[post_id] = ([], [], [])
        elif line:
            columns = line.split("\t")
            if current is None or len(columns) != 3:
                raise ValueError(
                    f"{path}, line {number}: expected word<TAB>gold<TAB>predicted after a '# id' line, got {line!r}"
                )
            for column, value in zip(current, columns, strict=True):
                column.append(value)
    return posts


def write_predictions(
    path: str | os.PathLike,
    split: datasets.Dataset,
    predicted_tag_ids: Sequence[Sequence[int]],
    id2label: Mapping,
) -> Path:
    """Write `format_predictions` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, format_predictions(split, predicted_tag_ids, id2label))
    return path


__all__ = ["format_predictions", "read_predictions", "write_predictions"]
