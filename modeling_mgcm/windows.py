"""Windows of a long tweet: planning overlapping windows of whole words, and merging their predictions back.

A tweet longer than the word-piece window is split into overlapping windows of whole words, so every word
gets a prediction; `merge_windows` puts the per-window word predictions back together, one per word.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# Keys of an encoding that locate each window in its tweet; they are bookkeeping, not model inputs.
WINDOW_INFO_KEYS = ("overflow_to_sample_mapping", "window_word_offset")


def plan_windows(piece_counts: Sequence[int], capacity: int, stride: int) -> list[tuple[int, int]]:
    """Split a tweet into windows of whole words holding at most `capacity` word pieces each.

    Args:
        piece_counts: word pieces of each word, each already clipped to `1..capacity`.
        capacity: word pieces a window holds (the window length without special tokens).
        stride: words shared by two consecutive windows (fewer when the next word would not fit).

    Returns:
        `(start, end)` word ranges, end exclusive, in order; together they cover every word.
    """
    if any(count < 1 or count > capacity for count in piece_counts):
        raise ValueError(f"piece counts must lie in 1..{capacity}, got {list(piece_counts)}")
    num_words = len(piece_counts)
    windows = []
    start = 0
    while True:
        end, used = start, 0
        while end < num_words and used + piece_counts[end] <= capacity:
            used += piece_counts[end]
            end += 1
        windows.append((start, end))
        if end >= num_words:
            return windows
        # The next window must reach the first word this one could not hold, else it would add nothing.
        next_start = max(end - stride, start + 1)
        while sum(piece_counts[next_start : end + 1]) > capacity:
            next_start += 1
        start = next_start


def as_python_list(values: Any) -> list:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().tolist()
    if isinstance(values, np.ndarray):
        return values.tolist()
    return list(values)


def merge_windows(
    window_predictions: Sequence[Any],
    overflow_to_sample_mapping: Sequence[int],
    window_word_offset: Sequence[int],
    window_word_count: Sequence[int] | None = None,
    num_words: Sequence[int] | None = None,
) -> list[list[Any]]:
    """Put per-window word predictions back together into one prediction per word of each tweet.

    Each word is taken from the window in which it lies farthest from a window edge that cuts the tweet
    (the tweet's own first and last word are not cut edges); ties go to the earlier window.

    Args:
        window_predictions: one entry per window: tags `(W,)` or per-word score vectors `(W, L)`, as a
            tensor `(N, W[, L])`, an array or a list of lists; entries past the window's word count are ignored.
        overflow_to_sample_mapping: `(N,)` tweet index of each window (0..num_tweets-1).
        window_word_offset: `(N,)` index in its tweet of each window's first word.
        window_word_count: `(N,)` words in each window (`word_mask.sum(1)`); by default the length of
            each window's predictions.
        num_words: optional words per tweet, checked against what the windows cover.

    Returns:
        A list over tweets of lists over words (ints for tags, lists of floats for score vectors).
    """
    mapping = [int(value) for value in as_python_list(overflow_to_sample_mapping)]
    offsets = [int(value) for value in as_python_list(window_word_offset)]
    if len(mapping) != len(offsets) or len(mapping) != len(window_predictions):
        raise ValueError(
            f"merge_windows needs one mapping and one offset per window: got {len(window_predictions)} "
            f"predictions, {len(mapping)} mappings and {len(offsets)} offsets"
        )
    counts = (
        None if window_word_count is None else [int(value) for value in as_python_list(window_word_count)]
    )
    if counts is not None and len(counts) != len(mapping):
        raise ValueError(f"window_word_count has {len(counts)} entries for {len(mapping)} windows")
    if not mapping:
        return []

    windows_of_tweet: dict[int, list[tuple[int, list]]] = {}
    for window, (tweet, offset) in enumerate(zip(mapping, offsets, strict=True)):
        predictions = as_python_list(window_predictions[window])
        count = len(predictions) if counts is None else counts[window]
        if count > len(predictions):
            raise ValueError(f"window {window} has {count} words but only {len(predictions)} predictions")
        if tweet < 0 or offset < 0:
            raise ValueError(
                f"window {window} has a negative tweet index ({tweet}) or word offset ({offset})"
            )
        windows_of_tweet.setdefault(tweet, []).append((offset, predictions[:count]))

    num_tweets = max(windows_of_tweet) + 1
    if num_words is not None and len(num_words) != num_tweets:
        raise ValueError(f"num_words has {len(num_words)} entries but the windows cover {num_tweets} tweets")
    merged = []
    for tweet in range(num_tweets):
        if tweet not in windows_of_tweet:
            raise ValueError(f"tweet {tweet} has no window: pass the windows of every tweet")
        windows = windows_of_tweet[tweet]
        tweet_length = max(offset + len(predictions) for offset, predictions in windows)
        if num_words is not None:
            if int(num_words[tweet]) < tweet_length:
                raise ValueError(
                    f"tweet {tweet}: windows reach word {tweet_length - 1} of {num_words[tweet]}"
                )
            tweet_length = int(num_words[tweet])
        best_distance = [-1] * tweet_length
        words = [None] * tweet_length
        for offset, predictions in windows:
            end = offset + len(predictions)
            for position, prediction in enumerate(predictions):
                word = offset + position
                left = word - offset if offset > 0 else tweet_length
                right = end - 1 - word if end < tweet_length else tweet_length
                distance = min(left, right)
                if distance > best_distance[word]:
                    best_distance[word] = distance
                    words[word] = prediction
        missing = [word for word, distance in enumerate(best_distance) if distance < 0]
        if missing:
            raise ValueError(f"tweet {tweet}: words {missing[:10]} of {tweet_length} are in no window")
        merged.append(words)
    return merged


__all__ = ["WINDOW_INFO_KEYS", "as_python_list", "merge_windows", "plan_windows"]
