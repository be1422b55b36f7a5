"""Small corpora that tests write and read: the CoNLL text of a three-tweet split, files, splits of image
paths, and tag ids read back as names. `conftest.corpus_dir` is a corpus folder made of `TRAIN_TEXT`."""

from collections.abc import Sequence
from pathlib import Path

import datasets

from processing.corpus.labels import LABEL_NAMES

# Tweets 101 (a mention, a PER and a LOC), 102 (Twitter-2015's OTHER, read as MISC) and 103 (an I- tag that
# opens an entity); no blank line after the last tweet.
TRAIN_TEXT = (
    "IMGID:101\nRT\tO\n@user\tO\nBarack\tB-PER\nObama\tI-PER\nin\tO\nParis\tB-LOC\n\n"
    "IMGID:102\nWorld\tB-OTHER\nCup\tI-OTHER\nby\tO\nFIFA\tB-ORG\n\n"
    "IMGID:103\nand\tO\nLondon\tI-LOC\ncalling\tO\n"
)


def write_file(path: Path, text: str | bytes) -> Path:
    """Write `text` (UTF-8) or bytes to `path`, creating its folder; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def tag_names(tag_ids: Sequence[int]) -> list[str]:
    return [LABEL_NAMES[tag_id] for tag_id in tag_ids]


def image_corpus_split(folder: Path, ids: Sequence[str], without_image: str) -> datasets.Dataset:
    """Corpus rows `id` and `image` (a `datasets.Image()` path, `<folder>/<id>.jpg`, which need not exist);
    the tweet `without_image` has no image."""
    images = [None if image_id == without_image else str(folder / f"{image_id}.jpg") for image_id in ids]
    return datasets.Dataset.from_dict(
        {"id": list(ids), "image": images},
        features=datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()}),
    )
