"""`detect_objects`: runs any object detector once per tweet image and caches the result as an objects file.

The detector is any callable that maps a PIL image to `[{"label": str, "score": float, ...}]`, such as
`transformers.pipeline("object-detection", model=...)` (its "box" entries are dropped). The result is the
JSON objects file that `processing.load_tweet_corpus(objects_file=...)` reads; its format is in
`docs/objects_format.md`.
"""

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from PIL import Image
from tqdm.auto import tqdm

from modeling_mgcm.atomic_files import write_text_atomically
from modeling_mgcm.image_loading import MISSING, ImageLoadError, load_image
from processing.corpus.tweet_corpus import read_objects_file
from processing.images.corpus_images import unique_image_entries, warn_unusable_images

logger = logging.getLogger(__name__)

Detector = Callable[[Image.Image], Sequence[Mapping[str, Any]]]


@dataclass
class ObjectDetectionStats:
    """What one `detect_objects` call did, per unique IMGID.

    Attributes:
        detected_ids: images the detector ran on in this call.
        reused_ids: images whose objects were already in the output file.
        missing_ids: tweets without an image, or whose image file does not exist (no objects).
        corrupt_ids: image files that cannot be decoded (no objects).
        problems: IMGID -> why its image is missing or corrupt.
    """

    detected_ids: list[str] = field(default_factory=list)
    reused_ids: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    corrupt_ids: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Counts and id lists, JSON-ready for a run's `results.json`."""
        return {
            "detected": len(self.detected_ids),
            "reused": len(self.reused_ids),
            "missing": len(self.missing_ids),
            "corrupt": len(self.corrupt_ids),
            "missing_ids": list(self.missing_ids),
            "corrupt_ids": list(self.corrupt_ids),
            "problems": dict(self.problems),
        }


class DetectedObjects(dict):
    """`{IMGID: [{"label": str, "score": float}, ...]}` (highest score first), with the call's `stats`."""

    def __init__(self, objects: Mapping[str, list[dict]], stats: ObjectDetectionStats):
        super().__init__(objects)
        self.stats = stats


def select_detections(
    detections: Any, threshold: float, top_k: int | None, where: str = "detections"
) -> list[dict[str, Any]]:
    """Validates a detector's output and keeps the `top_k` best with `score >= threshold`.

    Args:
        detections: a sequence of mappings with a non-empty string "label" and a "score" in [0, 1]; other
            keys ("box", ...) are dropped.
        threshold: lowest score kept.
        top_k: most objects kept (None: all).
        where: names the image in error messages.

    Returns:
        `[{"label": str, "score": float}, ...]`, highest score first (ties keep the detector's order).
    """
    if isinstance(detections, Mapping) or not isinstance(detections, Sequence) or isinstance(detections, str):
        raise ValueError(
            f"{where}: the detector must return a list of {{'label', 'score'}} dicts; got {type(detections).__name__}"
        )
    selected = []
    for index, detection in enumerate(detections):
        if not isinstance(detection, Mapping):
            raise ValueError(
                f"{where}, detection {index}: expected a {{'label', 'score'}} dict; got {detection!r}"
            )
        label, score = detection.get("label"), detection.get("score")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(
                f"{where}, detection {index}: label must be a non-empty class name string; got {label!r} "
                "(map class ids to names first, e.g. with the model's config.id2label)"
            )
        try:
            # Accepts Python, NumPy and 0-d torch numbers alike.
            score = float(score) if not isinstance(score, bool | str) else math.nan
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(
                f"{where}, detection {index}: score must be a number in [0, 1]; got {detection.get('score')!r}"
            )
        if score >= threshold:
            selected.append({"label": label, "score": score})
    selected.sort(key=lambda detection: detection["score"], reverse=True)
    return selected if top_k is None else selected[:top_k]


def write_objects_file(objects: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Path:
    """Writes `{IMGID: [{"label", "score"}, ...]}` atomically, one IMGID per line (so errors can name a line)."""
    path = Path(path)
    lines = [
        f"  {json.dumps(image_id, ensure_ascii=False)}: "
        + json.dumps([{"label": item["label"], "score": item["score"]} for item in items], ensure_ascii=False)
        for image_id, items in objects.items()
    ]
    text = "{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text)
    return path


def detect_objects(
    dataset: Dataset | DatasetDict,
    detector: Detector,
    threshold: float = 0.7,
    top_k: int | None = 5,
    output_file: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> DetectedObjects:
    """Runs `detector` once per unique tweet image and keeps its best objects.

    With an existing `output_file`, the detector runs only for IMGIDs not in it, and the file's entries are
    re-selected with this call's `threshold` and `top_k` (a higher threshold than the file was made with
    drops objects; a lower one cannot bring them back: delete the file to re-detect). Missing or corrupt
    images get no objects, are counted in `stats` and logged, and are not written, so a later call retries
    them. If the detector fails, the objects found so far are still written before the error propagates.

    Args:
        dataset: corpus rows with `id` and `image` (`datasets.Image()`) columns; all splits of a DatasetDict.
        detector: maps an RGB PIL image to `[{"label": str, "score": float, ...}]`, e.g.
            `pipeline("object-detection", model=...)` (that pipeline drops scores below its own `threshold`
            argument, 0.5 by default: wrap it with `functools.partial(pipe, threshold=...)` to go lower).
        threshold: lowest score kept (the paper: 0.7).
        top_k: most objects kept per image, highest scores first (the paper: 5); None keeps all.
        output_file: the JSON objects file to reuse and (re)write.
        show_progress: show a tqdm bar.

    Returns:
        `DetectedObjects`: `{IMGID: [{"label", "score"}, ...]}` for every image detected now or earlier (the
        output file's content), with `.stats` (`ObjectDetectionStats`).
    """
    if not callable(detector):
        raise TypeError(
            f"detector must be callable (PIL image -> list of dicts); got {type(detector).__name__}"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None; got {top_k!r}")

    objects: dict[str, list[dict]] = {}
    if output_file is not None and Path(output_file).exists():
        for image_id, detections in read_objects_file(output_file).items():
            objects[image_id] = select_detections(
                detections, threshold, top_k, f"{output_file}, IMGID {image_id}"
            )
    stats = ObjectDetectionStats()
    pending, stats.reused_ids = unique_image_entries(dataset, objects)
    progress = tqdm(total=len(pending), desc="object detection", unit="image", disable=not show_progress)
    try:
        for image_id, entry in pending:
            progress.update(1)
            try:
                if entry is None:
                    raise ImageLoadError("no image file", MISSING, "the row's image is None")
                image = load_image(entry)
            except ImageLoadError as error:
                (stats.missing_ids if error.is_missing else stats.corrupt_ids).append(image_id)
                stats.problems[image_id] = f"IMGID {image_id}: {error}"
                continue
            try:
                detections = detector(image)
            except Exception as error:
                raise RuntimeError(f"the detector failed on IMGID {image_id}: {error}") from error
            objects[image_id] = select_detections(detections, threshold, top_k, f"IMGID {image_id}")
            stats.detected_ids.append(image_id)
    finally:
        progress.close()
        if output_file is not None:
            write_objects_file(objects, output_file)
    _log_stats(stats, output_file)
    return DetectedObjects(objects, stats)


def _log_stats(stats: ObjectDetectionStats, output_file: str | os.PathLike | None) -> None:
    logger.info(
        "object detection: %d images detected, %d reused%s, %d missing, %d corrupt",
        len(stats.detected_ids),
        len(stats.reused_ids),
        f" from {output_file}" if output_file is not None else "",
        len(stats.missing_ids),
        len(stats.corrupt_ids),
    )
    warn_unusable_images(logger, stats.missing_ids, stats.corrupt_ids, stats.problems, "get no objects")


__all__ = [
    "DetectedObjects",
    "Detector",
    "ObjectDetectionStats",
    "detect_objects",
    "select_detections",
    "write_objects_file",
]
