"""The "multimodal-ner" pipeline's model batches: windows padded with the processor's own padding, each row with
its post's image (raw pixels or cached features)."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def pad_window_batch(
    windows: Sequence[Mapping[str, Any]],
    pixel_values: Sequence[torch.Tensor | None],
    image_features: Sequence[torch.Tensor | None],
    processor: Any,
) -> dict[str, torch.Tensor]:
    """The model inputs of a batch of windows (`processor.encode_windows` rows), on the CPU.

    Args:
        windows: the B windows, each unpadded.
        pixel_values: per window its post's `(3, H, W)` image, or None.
        image_features: per window its post's `(R, D)` cached features, or None.
        processor: the `MGCMProcessor` whose `pad_windows` pads the text, word and side inputs.

    Returns:
        `pad_windows`'s inputs (without window bookkeeping), and for the image rows `pixel_values`
        (B, 3, H, W) and/or `image_features` (B, R, D), `image_mask` (B,), and when both kinds are present
        `pixel_rows` (B,) bool marking the rows whose image is in `pixel_values`. Padding does not change a
        window's outputs.
    """
    # The processor's padding rather than the base pipeline's `pad_collate_fn`, which pads every unknown key
    # with 0 along dim 1: wrong for word_ids (-1), object ids, text-source ids and the neighbour tables.
    inputs = dict(processor.pad_windows(windows, return_window_info=False, return_tensors="pt"))
    pixel_rows = [row for row, values in enumerate(pixel_values) if values is not None]
    feature_rows = [row for row, features in enumerate(image_features) if features is not None]
    if pixel_rows:
        inputs["pixel_values"] = _stack_rows(pixel_values, pixel_rows, "pixel_values")
    if feature_rows:
        inputs["image_features"] = _stack_rows(image_features, feature_rows, "image_features")
    if pixel_rows or feature_rows:
        image_mask = torch.zeros(len(windows), dtype=torch.long)
        image_mask[pixel_rows + feature_rows] = 1
        inputs["image_mask"] = image_mask
    if pixel_rows and feature_rows:
        pixel_mask = torch.zeros(len(windows), dtype=torch.bool)
        pixel_mask[pixel_rows] = True
        inputs["pixel_rows"] = pixel_mask
    return inputs


def _stack_rows(values: Sequence[torch.Tensor | None], rows: list[int], key: str) -> torch.Tensor:
    """`(B, ...)` float32 with `values[row]` at each of `rows` and zeros elsewhere."""
    present = [values[row] for row in rows]
    shapes = {tuple(value.shape) for value in present}
    if len(shapes) != 1:
        raise ValueError(
            f"the posts of a batch have {key} of different shapes {sorted(shapes)}: the image processor must "
            "give every image the same size (or use batch_size=1)"
        )
    stacked = torch.zeros((len(values), *present[0].shape), dtype=torch.float32)
    stacked[rows] = torch.stack([value.cpu().float() for value in present])
    return stacked


__all__ = ["pad_window_batch"]
