"""The images of a loaded corpus: each IMGID once, split into the ones still to process and the ones done.

Shared by the image feature cache and object detection, which both work per unique image over every split.
"""

import logging
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import Any

from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature


def _iterate_splits(dataset: Dataset | DatasetDict) -> Iterator[tuple[str, Dataset]]:
    if isinstance(dataset, DatasetDict):
        yield from dataset.items()
    elif isinstance(dataset, Dataset):
        yield (dataset.split and str(dataset.split)) or "dataset", dataset
    else:
        raise TypeError(f"expected a datasets.Dataset or DatasetDict; got {type(dataset).__name__}")


def unique_image_entries(
    dataset: Dataset | DatasetDict, done_ids: Container[str]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Splits the unique IMGIDs of corpus rows (all splits, first row of an IMGID wins) into work and done.

    Args:
        dataset: rows with `id` (string) and `image` (`datasets.Image()`, None when absent) columns.
        done_ids: IMGIDs that need no work (already cached).

    Returns:
        `pending`: (IMGID, undecoded image entry `{"path", "bytes"}` or None) for each IMGID not in
        `done_ids`, in dataset order; and the IMGIDs of the dataset that are in `done_ids`. Only the pending
        rows' image entries are read, and none is decoded: pass them to `load_image`.
    """
    seen: set[str] = set()
    pending: list[tuple[str, Any]] = []
    done: list[str] = []
    for split_name, split in _iterate_splits(dataset):
        absent = [name for name in ("id", "image") if name not in split.column_names]
        if absent:
            raise ValueError(
                f"split {split_name!r} lacks the columns {absent} (it has {split.column_names}); "
                "corpus rows need `id` and `image`"
            )
        positions = []
        for position, image_id in enumerate(split["id"]):
            if not isinstance(image_id, str) or not image_id:
                raise ValueError(f"split {split_name!r}, row {position}: invalid IMGID {image_id!r}")
            if image_id in seen:
                continue
            seen.add(image_id)
            if image_id in done_ids:
                done.append(image_id)
            else:
                positions.append(position)
        if positions:
            # Undecoded, so that a bad file is caught by load_image and not inside datasets.
            entries = split.select_columns(["id", "image"]).select(positions)
            entries = entries.cast_column("image", ImageFeature(decode=False))
            pending.extend((row["id"], row["image"]) for row in entries)
    return pending, done


def warn_unusable_images(
    logger: logging.Logger,
    missing_ids: Sequence[str],
    corrupt_ids: Sequence[str],
    problems: Mapping[str, str],
    outcome: str,
) -> None:
    """One warning per kind of unusable image (missing, corrupt), with its count and the first three problems."""
    for kind, ids in (("missing", missing_ids), ("corrupt", corrupt_ids)):
        if ids:
            examples = "; ".join(problems[image_id] for image_id in ids[:3])
            logger.warning("%d %s images %s, e.g. %s", len(ids), kind, outcome, examples)


__all__ = ["unique_image_entries", "warn_unusable_images"]
