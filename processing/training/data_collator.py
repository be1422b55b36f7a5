"""`MGCMDataCollator`: pads the window rows of `preprocess_corpus` (`window_rows.py`) into model batches."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from transformers import BatchFeature

from modeling_mgcm.processing_mgcm import MGCMProcessor

# Columns every window row carries (see `MGCMProcessor.encode_windows`).
WINDOW_ROW_COLUMNS = (
    "id",
    "tweet_index",
    "window_word_offset",
    "words",
    "input_ids",
    "word_ids",
    "word_shape_ids",
)


class ImageFeatureSource(Protocol):
    """What the collator needs from an image feature cache (`processing.ImageFeatureCache`)."""

    def get(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features `(n, R, D)` float and image mask `(n,)` long for the given image ids."""
        ...


@dataclass
class MGCMDataCollator:
    """Turns window rows (`preprocess_corpus(processor, corpus)`) into padded model batches.

    Tokenisation happens once, in `preprocess_corpus`; the collator only pads, looks up the neighbour
    vectors of the words and, with an `image_feature_cache`, fetches the precomputed image features of the
    tweets (`image_features` `(B, R, D)`, `image_mask` `(B,)`).

    For evaluation set `return_window_info=True`: each batch then also holds `overflow_to_sample_mapping`
    `(B,)` (the tweet's row in the corpus split) and `window_word_offset` `(B,)`, which
    `MGCMProcessor.merge_windows` needs to give every word of every tweet exactly one prediction, even in
    tweets longer than the window. Remove them (`WINDOW_INFO_KEYS`) before calling the model.

    Args:
        processor: the `MGCMProcessor` that wrote the rows (its tokenizer pads, its table looks up).
        image_feature_cache: optional object with `get(ids) -> (features, image_mask)`.
        return_window_info: add the window bookkeeping keys to each batch.
        return_tensors: "pt" (default) or "np".
    """

    processor: MGCMProcessor
    image_feature_cache: ImageFeatureSource | None = None
    return_window_info: bool = False
    return_tensors: str = "pt"

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        if len(rows) == 0:
            raise ValueError("MGCMDataCollator got an empty batch")
        missing = [name for name in WINDOW_ROW_COLUMNS if name not in rows[0]]
        if missing:
            raise ValueError(
                f"the rows lack the window columns {missing} (they have {sorted(rows[0])}): "
                "run processing.training.window_rows.preprocess_corpus(processor, corpus) first"
            )
        batch = self.processor.pad_windows(
            rows, return_window_info=self.return_window_info, return_tensors=None
        )
        if self.image_feature_cache is not None:
            batch["image_features"], batch["image_mask"] = self._image_features([row["id"] for row in rows])
        return BatchFeature(data=dict(batch), tensor_type=self.return_tensors)

    def _image_features(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`(B, R, D)` features and `(B,)` mask; the windows of one tweet share one cache read."""
        unique_ids = list(dict.fromkeys(ids))
        features, image_mask = self.image_feature_cache.get(unique_ids)
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().float().numpy()
        features = np.asarray(features, dtype=np.float32)
        if isinstance(image_mask, torch.Tensor):
            image_mask = image_mask.detach().cpu().numpy()
        image_mask = np.asarray(image_mask, dtype=np.int64)
        if (
            features.ndim != 3
            or features.shape[0] != len(unique_ids)
            or image_mask.shape != (len(unique_ids),)
        ):
            raise ValueError(
                f"image_feature_cache.get({len(unique_ids)} ids) returned features {features.shape} and mask "
                f"{image_mask.shape}; expected ({len(unique_ids)}, R, D) and ({len(unique_ids)},)"
            )
        position = {image_id: index for index, image_id in enumerate(unique_ids)}
        rows = [position[image_id] for image_id in ids]
        return features[rows], image_mask[rows]


__all__ = ["ImageFeatureSource", "MGCMDataCollator", "WINDOW_ROW_COLUMNS"]
