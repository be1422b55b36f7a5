"""The window rows a model trains and is evaluated on: each tweet of a corpus tokenised once by the processor
into the windows of `MGCMProcessor.encode_windows`, stored as a `datasets` table that `MGCMDataCollator`
pads into batches.
"""

import logging
from collections.abc import Sequence

import datasets
from datasets import Features, List, Value

from modeling_mgcm.configuration_mgcm import MGCMConfig
from modeling_mgcm.processing_mgcm import MGCMProcessor

logger = logging.getLogger(__name__)


def preprocess_corpus(processor: MGCMProcessor, dataset, batch_size: int = 256, **map_kwargs):
    """Tokenise a corpus split (or a DatasetDict) once into window rows for `MGCMDataCollator`.

    Reads the corpus columns `id`, `tokens` and, when present, `ner_tags`, the processor's text sources
    (`caption`, ...), `objects` (objects only if the processor has `object_labels`); images are not
    decoded. Each output row is a window (see `MGCMProcessor.encode_windows`) plus `id`; `tweet_index` is
    the row of the tweet in its split. `map_kwargs` go to `datasets.Dataset.map` (`keep_in_memory=True`...).
    """
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {
                name: preprocess_corpus(processor, split, batch_size, **map_kwargs)
                for name, split in dataset.items()
            }
        )
    missing = {"id", "tokens"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"the corpus lacks the columns {sorted(missing)}; it has {dataset.column_names}")
    columns = [
        name
        for name in ("id", "tokens", "ner_tags", *processor.text_sources, "objects")
        if name in dataset.column_names
    ]
    if processor.object_labels is None and "objects" in columns:
        columns.remove("objects")
        if any(len(objects) for objects in dataset["objects"]):
            logger.warning(
                "the corpus has detected objects but the processor has no object_labels: objects are left out"
            )
    features = window_row_features(processor, columns)

    def encode_batch(*batch_columns_and_indices):
        # datasets passes the input columns, then the row indices, positionally.
        *batch_columns, indices = batch_columns_and_indices
        batch = dict(zip(columns, batch_columns, strict=True))
        windows = processor.encode_windows(
            batch["tokens"],
            word_labels=batch.get("ner_tags"),
            objects=batch.get("objects"),
            text_sources={name: batch[name] for name in processor.text_sources if name in batch},
        )
        rows: dict[str, list] = {name: [] for name in features}
        for window in windows:
            tweet = window["tweet_index"]
            for name, values in rows.items():
                if name == "id":
                    values.append(batch["id"][tweet])
                elif name == "tweet_index":
                    values.append(indices[tweet])
                else:
                    values.append(window[name])
        return rows

    return dataset.map(
        encode_batch,
        input_columns=columns,
        with_indices=True,
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        features=features,
        desc="Tokenising tweets into windows",
        **map_kwargs,
    )


def window_row_features(processor: MGCMProcessor, corpus_columns: Sequence[str]) -> Features:
    """The `datasets.Features` of the window rows `preprocess_corpus` writes from `corpus_columns`."""
    features = {
        "id": Value("string"),
        "tweet_index": Value("int64"),
        "window_word_offset": Value("int64"),
        "words": List(Value("string")),
        "input_ids": List(Value("int32")),
        "word_ids": List(Value("int32")),
        "word_shape_ids": List(Value("int32")),
    }
    if processor.uses_token_type_ids:
        features["token_type_ids"] = List(Value("int32"))
    if "ner_tags" in corpus_columns:
        features["labels"] = List(Value("int32"))
    for name in processor.granularity_sources:
        if name in corpus_columns:
            features[f"{name}_input_ids"] = List(Value("int32"))
    if "objects" in corpus_columns and processor.object_labels is not None:
        features["object_ids"] = List(Value("int32"))
    return Features(features)


def tokenised_windows(
    processor: MGCMProcessor,
    corpus: datasets.DatasetDict,
    model_config: MGCMConfig,
    dropped_sources: Sequence[str] = (),
) -> datasets.DatasetDict:
    """The window rows of every split, without the inputs of text sources the model does not read; the
    `dropped_sources` are emptied first, as if no post had them."""
    if dropped_sources:
        corpus = corpus.map(lambda row: dict.fromkeys(dropped_sources, ""), desc="Removing text sources")
    windows = preprocess_corpus(processor, corpus)
    # Every split has the same columns; the corpus need not have a train split (final evaluation).
    columns = next(iter(windows.values())).column_names
    unread = [
        f"{name}_input_ids"
        for name in processor.granularity_sources
        if name not in model_config.text_sources and f"{name}_input_ids" in columns
    ]
    return windows.remove_columns(unread) if unread else windows


__all__ = ["preprocess_corpus", "tokenised_windows", "window_row_features"]
