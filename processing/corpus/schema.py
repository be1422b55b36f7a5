"""The `datasets.Features` of a tweet corpus, shared by the real-corpus loader and the synthetic corpus."""

from collections.abc import Sequence

from datasets import ClassLabel, Features, Image, List, Value

from processing.corpus.labels import LABEL_NAMES


def corpus_features(text_sources: Sequence[str] = ()) -> Features:
    """Features of one corpus split, as in docs/interfaces.md.

    `image` holds a file path (decoded lazily) or in-memory bytes, and None when the tweet has no image;
    `caption` is "" and `objects` is [] when absent. Each further named text source (`knowledge`, ...) is a
    string column after `caption`, "" where a tweet has none.
    """
    extra_sources = {name: Value("string") for name in text_sources if name != "caption"}
    return Features(
        {
            "id": Value("string"),
            "tokens": List(Value("string")),
            "ner_tags": List(ClassLabel(names=LABEL_NAMES)),
            "image": Image(),
            "caption": Value("string"),
            **extra_sources,
            "objects": List({"label": Value("string"), "score": Value("float32")}),
        }
    )


__all__ = ["corpus_features"]
