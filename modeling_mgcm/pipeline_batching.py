"""The "multimodal-ner" pipeline's model calls: the windows of a batch of prepared posts, sorted by length and
padded into a few model batches, each row with its post's image (raw pixels or cached features)."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

# A batch of posts runs as at most this many model calls over length-sorted windows, each of at least
# MIN_WINDOWS_PER_MODEL_CALL windows: less padding, still large matrix products.
MAX_MODEL_CALLS_PER_BATCH = 4
MIN_WINDOWS_PER_MODEL_CALL = 8


def pad_into_model_batches(
    prepared: Sequence[Mapping[str, Any]], processor: Any, text_sources: Sequence[str]
) -> list[tuple[dict[str, torch.Tensor], list[tuple[int, int]]]]:
    """Pad the windows of prepared posts (`MultimodalNERPipeline.preprocess`'s) into model batches with the
    processor's `pad_windows`; `text_sources` are the sources the model reads.

    Windows are sorted by length and cut into at most `MAX_MODEL_CALLS_PER_BATCH` batches of at least
    `MIN_WINDOWS_PER_MODEL_CALL` windows, so that short tweets are not padded to the longest one (tweets
    vary from a few to a hundred word pieces). Padding does not change a window's outputs.

    Returns `(model inputs, (post index, window index) of each row)` per model batch; none when no post
    has a word. Image rows: `pixel_values` (B, 3, H, W) and/or `image_features` (B, R, D), `image_mask`
    (B,), and when both kinds are present `pixel_rows` (B,) bool marking the rows in `pixel_values`.
    """
    keys = [
        (post_index, index)
        for post_index, post in enumerate(prepared)
        for index in range(len(post["windows"]))
    ]
    if not keys:
        return []

    def length(key: tuple[int, int]) -> tuple[int, ...]:
        window = prepared[key[0]]["windows"][key[1]]
        sources = (len(window.get(f"{name}_input_ids") or ()) for name in text_sources)
        return len(window["input_ids"]), *sources

    keys.sort(key=length)
    group_size = max(MIN_WINDOWS_PER_MODEL_CALL, math.ceil(len(keys) / MAX_MODEL_CALLS_PER_BATCH))
    return [
        (
            _pad_windows(prepared, keys[start : start + group_size], processor),
            keys[start : start + group_size],
        )
        for start in range(0, len(keys), group_size)
    ]


def _pad_windows(
    prepared: Sequence[Mapping[str, Any]], keys: list[tuple[int, int]], processor: Any
) -> dict[str, torch.Tensor]:
    windows = [prepared[post_index]["windows"][index] for post_index, index in keys]
    owners = [post_index for post_index, _ in keys]
    inputs = dict(processor.pad_windows(windows, return_window_info=False, return_tensors="pt"))
    pixel_rows = [row for row, owner in enumerate(owners) if prepared[owner]["pixel_values"] is not None]
    feature_rows = [row for row, owner in enumerate(owners) if prepared[owner]["image_features"] is not None]
    if pixel_rows:
        inputs["pixel_values"] = _stack_rows(prepared, owners, pixel_rows, "pixel_values")
    if feature_rows:
        inputs["image_features"] = _stack_rows(prepared, owners, feature_rows, "image_features")
    if pixel_rows or feature_rows:
        image_mask = torch.zeros(len(windows), dtype=torch.long)
        image_mask[pixel_rows + feature_rows] = 1
        inputs["image_mask"] = image_mask
    if pixel_rows and feature_rows:
        pixel_mask = torch.zeros(len(windows), dtype=torch.bool)
        pixel_mask[pixel_rows] = True
        inputs["pixel_rows"] = pixel_mask
    return inputs


def _stack_rows(prepared, owners: list[int], rows: list[int], key: str) -> torch.Tensor:
    values = [prepared[owners[row]][key] for row in rows]
    shapes = {tuple(value.shape) for value in values}
    if len(shapes) != 1:
        raise ValueError(
            f"the posts of a batch have {key} of different shapes {sorted(shapes)}: the image processor must "
            "give every image the same size (or use batch_size=1)"
        )
    stacked = torch.zeros((len(owners), *values[0].shape), dtype=torch.float32)
    stacked[rows] = torch.stack(values)
    return stacked


__all__ = ["MAX_MODEL_CALLS_PER_BATCH", "MIN_WINDOWS_PER_MODEL_CALL", "pad_into_model_batches"]
