"""Padding unpadded windows (the rows `MGCMProcessor.encode_windows` yields) into the arrays of one batch."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def padded_windows(
    windows: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_token_type_id: int | None,
    neighbour_table: Any,
    text_sources: Sequence[str],
    max_objects: int,
    object_padding_id: int,
) -> dict[str, np.ndarray]:
    """The model inputs of a batch of windows, as int64/float32 arrays (see `MGCMProcessor.pad_windows`).

    `pad_token_type_id` is None when the tokenizer uses no token types; `neighbour_table` (with a
    `lookup(words)`) or None; `text_sources` the sources read as granularities.
    """
    if len(windows) == 0:
        raise ValueError("pad_windows got no windows")
    batch_size = len(windows)
    max_pieces = max(len(window["input_ids"]) for window in windows)
    max_words = max(len(window["words"]) for window in windows)

    input_ids = np.full((batch_size, max_pieces), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((batch_size, max_pieces), dtype=np.int64)
    word_ids = np.full((batch_size, max_pieces), -1, dtype=np.int64)
    word_mask = np.zeros((batch_size, max_words), dtype=np.int64)
    word_shape_ids = np.zeros((batch_size, max_words), dtype=np.int64)
    for row, window in enumerate(windows):
        num_pieces, num_words = len(window["input_ids"]), len(window["words"])
        if len(window["word_ids"]) != num_pieces or len(window["word_shape_ids"]) != num_words:
            raise ValueError(f"window {row} is inconsistent: input_ids, word_ids, words and shapes disagree")
        input_ids[row, :num_pieces] = window["input_ids"]
        attention_mask[row, :num_pieces] = 1
        word_ids[row, :num_pieces] = window["word_ids"]
        word_mask[row, :num_words] = 1
        word_shape_ids[row, :num_words] = window["word_shape_ids"]
    data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pad_token_type_id is not None:
        token_type_ids = np.full((batch_size, max_pieces), pad_token_type_id, dtype=np.int64)
        for row, window in enumerate(windows):
            types = window.get("token_type_ids")
            if types is None:
                raise ValueError(f"window {row} has no token_type_ids but the tokenizer uses them")
            token_type_ids[row, : len(types)] = types
        data["token_type_ids"] = token_type_ids
    data.update(word_ids=word_ids, word_mask=word_mask, word_shape_ids=word_shape_ids)

    if neighbour_table is not None:
        data.update(_neighbour_inputs(windows, neighbour_table, max_words))
    if _all_or_none(windows, "labels"):
        labels = np.full((batch_size, max_words), -100, dtype=np.int64)
        for row, window in enumerate(windows):
            if len(window["labels"]) != len(window["words"]):
                raise ValueError(
                    f"window {row} has {len(window['words'])} words but {len(window['labels'])} labels"
                )
            labels[row, : len(window["labels"])] = window["labels"]
        data["labels"] = labels
    for name in text_sources:
        if _all_or_none(windows, f"{name}_input_ids"):
            data.update(_text_source_inputs(windows, name, pad_token_id))
    if _all_or_none(windows, "object_ids"):
        data.update(_object_inputs(windows, max_objects, object_padding_id))
    return data


def _all_or_none(windows: Sequence[Mapping[str, Any]], key: str) -> bool:
    present = [window.get(key) is not None for window in windows]
    if any(present) and not all(present):
        raise ValueError(f"{key} is given for some windows and not others: give it for all or none")
    return all(present)


def _neighbour_inputs(
    windows: Sequence[Mapping[str, Any]], neighbour_table: Any, max_words: int
) -> dict[str, np.ndarray]:
    all_words = [word for window in windows for word in window["words"]]
    vectors, weights = neighbour_table.lookup(all_words)
    vectors = np.asarray(vectors, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    num_neighbours, dim = vectors.shape[1], vectors.shape[2]
    padded_vectors = np.zeros((len(windows), max_words, num_neighbours, dim), dtype=np.float32)
    padded_weights = np.zeros((len(windows), max_words, num_neighbours), dtype=np.float32)
    position = 0
    for row, window in enumerate(windows):
        num_words = len(window["words"])
        padded_vectors[row, :num_words] = vectors[position : position + num_words]
        padded_weights[row, :num_words] = weights[position : position + num_words]
        position += num_words
    return {"neighbour_vectors": padded_vectors, "neighbour_weights": padded_weights}


def _text_source_inputs(
    windows: Sequence[Mapping[str, Any]], name: str, pad_token_id: int
) -> dict[str, np.ndarray]:
    key = f"{name}_input_ids"
    # One column at least, so that a batch in which no tweet has the source still has a (B, C) mask.
    length = max(1, max(len(window[key]) for window in windows))
    input_ids = np.full((len(windows), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), length), dtype=np.int64)
    for row, window in enumerate(windows):
        ids = window[key]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return {key: input_ids, f"{name}_attention_mask": attention_mask}


def _object_inputs(
    windows: Sequence[Mapping[str, Any]], max_objects: int, object_padding_id: int
) -> dict[str, np.ndarray]:
    object_ids = np.full((len(windows), max_objects), object_padding_id, dtype=np.int64)
    object_mask = np.zeros((len(windows), max_objects), dtype=np.int64)
    for row, window in enumerate(windows):
        ids = list(window["object_ids"])[:max_objects]
        if any(not 0 <= object_id < object_padding_id for object_id in ids):
            raise ValueError(f"window {row} has object ids {ids} outside 0..{object_padding_id - 1}")
        object_ids[row, : len(ids)] = ids
        object_mask[row, : len(ids)] = 1
    return {"object_ids": object_ids, "object_mask": object_mask}


__all__ = ["padded_windows"]
