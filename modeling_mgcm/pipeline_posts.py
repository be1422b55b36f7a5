"""Reading one raw post for the "multimodal-ner" pipeline: its keys and the types of its values checked, its
text as words with character offsets, and its objects as the processor takes them; `NumberedPost` (a post with
its input index) and `PreparedPost` (a post read and encoded into windows)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .tweet_tokenizer import split_tweet


@dataclass
class NumberedPost:
    """A raw post and its index in the pipeline's inputs, so that an error can name the input."""

    index: int
    post: Any


# A dataclass rather than a dict: `Pipeline.forward` moves the tensors of dicts and lists to the model's device
# and back, and a post's pixels and texts travel beside the model inputs untouched.
@dataclass
class PreparedPost:
    """One post read and encoded (`MultimodalNERPipeline.prepare_post`), shared by the model items of its windows.

    Attributes:
        text: the post's text (a list of words joined by single spaces).
        words: its words; `spans` their `(start, end)` character offsets in `text`.
        windows: the unpadded windows of `processor.encode_windows` (none for a post without words).
        pixel_values: `(3, H, W)` image the vision backbone reads, or None.
        image_features: `(R, D)` cached image features, or None.
        image_error: why the image was left out (`on_bad_image="mask"`), or None.
        attended, piece_words: with `output_attentions`, what the attention columns are (`attended_inputs`).
    """

    text: str
    words: list[str]
    spans: list[tuple[int, int]]
    windows: list[dict[str, Any]] = field(default_factory=list)
    pixel_values: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    image_error: str | None = None
    attended: dict[str, Any] = field(default_factory=dict)
    piece_words: dict[str, list[int]] = field(default_factory=dict)


def check_post(post: Any, post_keys: Sequence[str], text_sources: Sequence[str]) -> dict[str, Any]:
    """The post as a dict (a string is its text), its keys and the types of its values checked: `post_keys`
    are the keys a post may have, `text_sources` the processor's text sources (each a string or None)."""
    if isinstance(post, str):
        return {"text": post}
    if not isinstance(post, Mapping):
        raise TypeError(f"a post must be a dict with a 'text' or a string, got {type(post).__name__}")
    unknown = sorted(set(post) - set(post_keys))
    if unknown:
        raise ValueError(f"unknown post keys {unknown}; a post has {list(post_keys)}")
    if "text" not in post:
        raise ValueError(f"a post needs a 'text' (str or list of words); got keys {sorted(post)}")
    for name in text_sources:
        text = post.get(name)
        if text is not None and not isinstance(text, str):
            raise TypeError(f"{name!r} must be a string or None, got {_describe(text)}")
    objects = post.get("objects")
    if objects is not None and (isinstance(objects, str) or not isinstance(objects, Sequence)):
        raise TypeError(
            f"'objects' must be a list of {{'label', 'score'}} dicts or labels, got {_describe(objects)}"
        )
    image_id = post.get("image_id")
    if image_id is not None and not isinstance(image_id, str):
        raise TypeError(f"'image_id' must be a string, got {_describe(image_id)}")
    return dict(post)


def words_and_spans(text: Any) -> tuple[str, list[str], list[tuple[int, int]]]:
    """The text, its words and each word's `(start, end)` character offsets in the text."""
    if isinstance(text, str):
        triples = split_tweet(text)
        return text, [word for word, _, _ in triples], [(start, end) for _, start, end in triples]
    if isinstance(text, Sequence) and all(isinstance(word, str) for word in text):
        words = list(text)
        spans, position = [], 0
        for word in words:
            spans.append((position, position + len(word)))
            position += len(word) + 1
        return " ".join(words), words, spans
    raise TypeError(f"'text' must be a string or a list of words (strings), got {_describe(text)}")


def processor_objects(objects: Sequence[Any] | None) -> list[dict[str, Any]]:
    """A post's objects as the processor takes them: `{"label", "score"}` dicts (a plain label scores 1)."""
    # Plain labels keep their order: the processor sorts by score, stably.
    if not objects:
        return []
    return [{"label": item, "score": 1.0} if isinstance(item, str) else item for item in objects]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["NumberedPost", "PreparedPost", "check_post", "processor_objects", "words_and_spans"]
