"""`MGCMProcessor`: turns tweets (words), images, detected objects and named text sources (captions, LLM
knowledge, ...) into MGCM model inputs.

A tweet longer than the word-piece window is split into overlapping windows of whole words, so every word
gets a prediction; `merge_windows` puts the per-window word predictions back together, one per word.
"""

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, BatchFeature, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PROCESSOR_NAME

from .atomic_files import write_text_atomically
from .configuration_mgcm import MGCMConfig, check_text_source_name
from .neighbour_table import NeighbourTable
from .tweet_normalise import clean_token, is_url
from .tweet_tokenizer import split_tweet
from .window_padding import padded_windows
from .windows import as_python_list, merge_windows, plan_windows
from .word_shape import word_shape_id

logger = logging.getLogger(__name__)

# Sub-folder of a saved processor that holds the neighbour table (safetensors + JSON, written by the table).
NEIGHBOUR_TABLE_FOLDER = "neighbour_table"
# Settings stored in processor_config.json; from_pretrained must not forward them to the tokenizer.
_PROCESSOR_SETTINGS = (
    "neighbour_table",
    "object_labels",
    "max_length",
    "stride",
    "max_objects",
    "max_caption_length",
    "url_token",
    "caption_as_text_segment",
    "text_source_max_lengths",
    "segment_sources",
)


class MGCMProcessor(ProcessorMixin):
    """Composes a tokenizer, an optional image processor, the semantic-augmentation neighbour table and the
    object label vocabulary into one processor producing the inputs of `MGCMForTokenClassification`.

    Args:
        tokenizer: a fast tokenizer of the text backbone (word ids are needed to align words).
        image_processor: optional image processor of the vision backbone, for raw `images`.
        neighbour_table: optional `NeighbourTable`; without it no `neighbour_*` inputs are produced.
        object_labels: detector class names, in the order of `config.object_labels`; without them objects
            cannot be encoded. Unknown detected labels are skipped, counted in `unknown_object_label_counts`
            and logged once per label.
        max_length: word pieces per window, special tokens included.
        stride: words shared by consecutive windows of a long tweet.
        max_objects: objects kept per image, highest scores first.
        max_caption_length: caption word pieces kept, special tokens included (the `caption` entry of
            `text_source_max_lengths`).
        text_source_max_lengths: name -> word pieces kept (special tokens included) of each text source the
            processor reads besides the caption, e.g. `{"knowledge": 200}`; it may also set the caption's.
        segment_sources: text sources appended to every window as further text segments
            (`[CLS] tweet [SEP] knowledge [SEP]`, PGIM- and ITA-style) instead of returning
            `<name>_input_ids` for their granularity; their pieces belong to no word. In this order.
        url_token: when set, every word that is a link (`tweet_normalise.is_url`) reaches the encoder as
            this one word: a t.co link is ~15 word pieces of noise. Labels, word shapes and neighbours
            still see the original word.
        caption_as_text_segment: put `caption` first in `segment_sources` (kept from earlier configs).
    """

    def __init__(
        self,
        tokenizer=None,
        image_processor=None,
        neighbour_table: NeighbourTable | None = None,
        object_labels: Sequence[str] | None = None,
        max_length: int = 128,
        stride: int = 16,
        max_objects: int = 5,
        max_caption_length: int = 32,
        url_token: str | None = None,
        caption_as_text_segment: bool = False,
        text_source_max_lengths: Mapping[str, int] | None = None,
        segment_sources: Sequence[str] = (),
    ):
        if tokenizer is None:
            raise ValueError("MGCMProcessor needs a tokenizer")
        super().__init__(tokenizer, image_processor)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"MGCMProcessor needs a fast tokenizer (word ids), got {type(tokenizer).__name__}"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(
                f"the tokenizer {type(tokenizer).__name__} has no pad token: set tokenizer.pad_token"
            )
        if neighbour_table is not None and not callable(getattr(neighbour_table, "lookup", None)):
            raise TypeError(
                f"neighbour_table must have a lookup(tokens) method, got {type(neighbour_table).__name__}"
            )
        if object_labels is not None:
            object_labels = list(object_labels)
            bad = [label for label in object_labels if not isinstance(label, str) or not label]
            duplicated = [label for label, count in Counter(object_labels).items() if count > 1]
            if bad or duplicated:
                raise ValueError(
                    f"object_labels must be distinct non-empty strings: bad {bad}, repeated {duplicated}"
                )
        for name, value, minimum in (
            ("max_length", max_length, 1),
            ("stride", stride, 0),
            ("max_objects", max_objects, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not isinstance(caption_as_text_segment, bool):
            raise ValueError(f"caption_as_text_segment must be a bool, got {caption_as_text_segment!r}")
        self.text_source_max_lengths = self._checked_source_lengths(
            {"caption": max_caption_length, **(text_source_max_lengths or {})}
        )
        self.segment_sources = self._checked_segment_sources(
            ["caption", *segment_sources] if caption_as_text_segment else list(segment_sources)
        )
        if url_token is not None and (not isinstance(url_token, str) or not url_token.strip()):
            raise ValueError(f"url_token must be a non-empty word or None, got {url_token!r}")
        if max_length > tokenizer.model_max_length:
            raise ValueError(
                f"max_length {max_length} exceeds the tokenizer's limit {tokenizer.model_max_length}"
            )
        segment_pieces = sum(self.text_source_max_lengths[name] for name in self.segment_sources)
        if max_length + segment_pieces > tokenizer.model_max_length:
            raise ValueError(
                f"max_length {max_length} + the segment sources' lengths {segment_pieces} "
                f"({', '.join(self.segment_sources)}) exceed the tokenizer's limit {tokenizer.model_max_length}: "
                "the segments would not fit"
            )

        self.neighbour_table = neighbour_table
        self.object_labels = object_labels
        self.max_length = max_length
        self.stride = stride
        self.max_objects = max_objects
        self.url_token = url_token
        self.unknown_object_label_counts: Counter[str] = Counter()
        self._object_label_ids = {label: index for index, label in enumerate(object_labels or [])}
        self._special_prefix, self._special_suffix, self._content_token_type = self._special_token_layout()
        self.window_capacity = max_length - len(self._special_prefix[0]) - len(self._special_suffix[0])
        if self.window_capacity < 1:
            raise ValueError(f"max_length {max_length} leaves no room for words next to the special tokens")
        self._segment_layout = self._pair_token_layout() if self.segment_sources else None

    @staticmethod
    def _checked_source_lengths(lengths: Mapping[str, int]) -> dict[str, int]:
        for name, length in lengths.items():
            check_text_source_name(name, "MGCMProcessor: text_source_max_lengths")
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise ValueError(
                    f"the maximum length of text source {name!r} must be an integer >= 1, got {length!r}"
                )
        return dict(lengths)

    def _checked_segment_sources(self, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in self.text_source_max_lengths]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if unknown or repeated:
            raise ValueError(
                f"segment_sources must name distinct text sources of text_source_max_lengths "
                f"{sorted(self.text_source_max_lengths)}: unknown {unknown}, repeated {repeated}"
            )
        return names

    @property
    def max_caption_length(self) -> int:
        return self.text_source_max_lengths["caption"]

    @property
    def caption_as_text_segment(self) -> bool:
        return "caption" in self.segment_sources

    @property
    def text_sources(self) -> list[str]:
        """Every text source this processor reads (the caption first)."""
        return list(self.text_source_max_lengths)

    @property
    def granularity_sources(self) -> list[str]:
        """The text sources returned as `<name>_input_ids` for their own granularity (not segments)."""
        return [name for name in self.text_source_max_lengths if name not in self.segment_sources]

    # ----------------------------------------------------------------------------------------------
    # ProcessorMixin plumbing: an optional image processor and a neighbour table saved beside the rest

    def check_argument_for_proper_class(self, argument_name, argument):
        # The image processor is optional: text-only and precomputed-feature processors have none.
        if argument_name == "image_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)

    @property
    def model_input_names(self) -> list[str]:
        """Names of the model inputs this processor can produce (window bookkeeping excluded)."""
        names = ["input_ids", "attention_mask"]
        if self.uses_token_type_ids:
            names.append("token_type_ids")
        names += ["word_ids", "word_mask", "word_shape_ids"]
        if self.neighbour_table is not None:
            names += ["neighbour_vectors", "neighbour_weights"]
        names += ["pixel_values", "image_features", "image_mask"]
        if self.object_labels is not None:
            names += ["object_ids", "object_mask"]
        for name in self.granularity_sources:
            names += [f"{name}_input_ids", f"{name}_attention_mask"]
        return [*names, "labels"]

    @property
    def uses_token_type_ids(self) -> bool:
        return "token_type_ids" in self.tokenizer.model_input_names

    @property
    def object_padding_id(self) -> int:
        """The "no object" id: `len(object_labels)`."""
        return len(self.object_labels or [])

    def to_dict(self) -> dict[str, Any]:
        """The settings written to `processor_config.json` (the tokenizer and the table have their own files)."""
        return {
            "object_labels": None if self.object_labels is None else list(self.object_labels),
            "max_length": self.max_length,
            "stride": self.stride,
            "max_objects": self.max_objects,
            "text_source_max_lengths": dict(self.text_source_max_lengths),
            "segment_sources": list(self.segment_sources),
            "url_token": self.url_token,
            "neighbour_table": None if self.neighbour_table is None else NEIGHBOUR_TABLE_FOLDER,
            "image_processor": None if self.image_processor is None else self.image_processor.to_dict(),
            "processor_class": type(self).__name__,
        }

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs
    ) -> list[str]:
        """Writes the tokenizer files, `processor_config.json` (settings and image processor), the neighbour
        table (safetensors, in the `neighbour_table/` sub-folder) and, once registered for `AutoProcessor`, the
        processor's code."""
        if push_to_hub:
            raise ValueError(
                "MGCMProcessor.save_pretrained saves locally only: upload the folder with huggingface_hub"
            )
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer._set_processor_class(type(self).__name__)
        self.tokenizer.save_pretrained(save_directory)
        if self.neighbour_table is not None:
            self.neighbour_table.save_pretrained(os.path.join(save_directory, NEIGHBOUR_TABLE_FOLDER))
        settings = self.to_dict()
        if self._auto_class is not None:
            # As ProcessorMixin does: the processor's code (and the files it imports) beside it, with its
            # AutoProcessor entry in the saved settings' `auto_map`, so that the folder loads as remote code.
            custom_object_save(self, save_directory, config=settings)
        processor_file = os.path.join(save_directory, PROCESSOR_NAME)
        write_text_atomically(processor_file, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return [processor_file]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MGCMProcessor":
        """Loads a processor written by `save_pretrained` (or a bare tokenizer folder: text-only processor)."""
        if "neighbour_table" not in kwargs:
            kwargs["neighbour_table"] = cls._load_neighbour_table(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _load_neighbour_table(cls, pretrained_model_name_or_path, kwargs: dict) -> NeighbourTable | None:
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **hub_kwargs)
        folder_name = processor_dict.get("neighbour_table")
        if folder_name is None:
            return None
        subfolder = kwargs.get("subfolder") or ""
        if os.path.isdir(pretrained_model_name_or_path):
            root = Path(pretrained_model_name_or_path)
        else:
            from huggingface_hub import snapshot_download

            pattern = "/".join(part for part in (subfolder, folder_name, "*") if part)
            root = Path(
                snapshot_download(
                    str(pretrained_model_name_or_path),
                    allow_patterns=[pattern],
                    revision=kwargs.get("revision"),
                    cache_dir=kwargs.get("cache_dir"),
                    token=kwargs.get("token"),
                    local_files_only=kwargs.get("local_files_only", False),
                )
            )
        table_folder = root / subfolder / folder_name
        if not table_folder.is_dir():
            raise FileNotFoundError(
                f"{root / subfolder / PROCESSOR_NAME} names a neighbour table in {folder_name!r}, but "
                f"{table_folder} does not exist: copy the whole processor folder"
            )
        return NeighbourTable.from_pretrained(table_folder)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # Our settings are processor arguments, not tokenizer ones; the image processor is loaded only if saved.
        for name in _PROCESSOR_SETTINGS:
            kwargs.pop(name, None)
        subfolder = kwargs.pop("subfolder", "")
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        image_processor = None
        if (processor_dict or {}).get("image_processor") is not None:
            image_processor = AutoImageProcessor.from_pretrained(
                pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            )
        return [tokenizer, image_processor]

    # ----------------------------------------------------------------------------------------------
    # Text: words -> windows of word pieces

    def _special_token_layout(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]], int]:
        """`(ids, token types)` the tokenizer puts before and after a single sequence ([CLS] ... [SEP]),
        and the token type of the words between them."""
        encoding = self.tokenizer(["a"], is_split_into_words=True, return_token_type_ids=True)
        word_positions = [position for position, word in enumerate(encoding.word_ids()) if word is not None]
        first, last = word_positions[0], word_positions[-1]
        ids, types = encoding["input_ids"], encoding["token_type_ids"]
        return (ids[:first], types[:first]), (ids[last + 1 :], types[last + 1 :]), types[first]

    def _pair_token_layout(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]], int]:
        """`(ids, token types)` the tokenizer puts between the two sequences of a pair and after the second
        ([SEP] and [SEP] for BERT, </s></s> and </s> for MPNet), and the token type of the second sequence."""
        first = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        second = self.tokenizer("b", add_special_tokens=False)["input_ids"]
        pair = self.tokenizer("a", "b", return_token_type_ids=True)
        ids, types = pair["input_ids"], pair["token_type_ids"]
        start = len(self._special_prefix[0]) + len(first)
        ends = [end for end in range(start, len(ids)) if ids[end : end + len(second)] == second]
        if ids[start - len(first) : start] != first or not ends:
            raise ValueError(
                f"cannot find the sentence-pair layout of {type(self.tokenizer).__name__} (ids {ids}): "
                "segment_sources need a tokenizer that encodes pairs"
            )
        end = ends[0]
        after = end + len(second)
        return (ids[start:end], types[start:end]), (ids[after:], types[after:]), types[end]

    def _encoder_word(self, word: str) -> str:
        """The word as the encoder sees it: a link becomes `url_token` when one is set."""
        if self.url_token is not None and is_url(clean_token(word)):
            return self.url_token
        return word

    def _word_pieces(self, tweets: list[list[str]]) -> list[list[list[int]]]:
        """Word-piece ids of every word of every tweet, each word holding 1..window_capacity pieces."""
        encoding = self.tokenizer(
            [[self._encoder_word(word) for word in words] for words in tweets],
            is_split_into_words=True,
            add_special_tokens=False,
            return_attention_mask=False,
            verbose=False,
        )
        unk_id = self.tokenizer.unk_token_id
        pieces_of_tweets = []
        for tweet_index, words in enumerate(tweets):
            pieces: list[list[int]] = [[] for _ in words]
            for piece_id, word in zip(
                encoding["input_ids"][tweet_index], encoding.word_ids(tweet_index), strict=True
            ):
                if word is not None:
                    pieces[word].append(piece_id)
            for word_index, word_pieces in enumerate(pieces):
                if not word_pieces:
                    # A lone NBSP or control character tokenises to nothing; it still needs a word slot.
                    if unk_id is None:
                        raise ValueError(
                            f"tweet {tweet_index}, word {word_index} ({words[word_index]!r}) has no word piece and "
                            f"the tokenizer has no unk token to stand for it"
                        )
                    word_pieces.append(unk_id)
                # A word longer than the window keeps its first pieces, enough for its prediction.
                del word_pieces[self.window_capacity :]
            pieces_of_tweets.append(pieces)
        return pieces_of_tweets

    def _text_source_ids(self, name: str, texts: Sequence[str | None]) -> list[list[int]]:
        """Word-piece ids of one text source per tweet, `[]` where it is absent or blank; for a segment
        source the pieces only, without special tokens."""
        for index, text in enumerate(texts):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} of tweet {index} must be a string or None, got {text!r}")
        present = [index for index, text in enumerate(texts) if text is not None and text.strip()]
        ids: list[list[int]] = [[] for _ in texts]
        if present:
            segment = name in self.segment_sources
            # The special tokens of a segment come from the window layout, so they are not counted here.
            encoding = self.tokenizer(
                [texts[index] for index in present],
                truncation=True,
                max_length=self.text_source_max_lengths[name],
                add_special_tokens=not segment,
                return_attention_mask=False,
            )
            for index, source_ids in zip(present, encoding["input_ids"], strict=True):
                ids[index] = list(source_ids)
        return ids

    def _checked_text_sources(
        self,
        captions: Sequence[str | None] | None,
        text_sources: Mapping[str, Sequence[str | None]] | None,
        num_tweets: int,
    ) -> dict[str, Sequence[str | None]]:
        """Name -> one text (or None) per tweet, the caption included, for the sources given."""
        sources = dict(text_sources or {})
        if captions is not None:
            if "caption" in sources:
                raise ValueError("give the captions as captions or as text_sources['caption'], not both")
            sources = {"caption": captions, **sources}
        unknown = sorted(set(sources) - set(self.text_source_max_lengths))
        if unknown:
            raise ValueError(
                f"text sources {unknown} are not read by this processor, which knows "
                f"{self.text_sources}: add them to text_source_max_lengths"
            )
        for name, texts in sources.items():
            if isinstance(texts, str):
                raise TypeError(f"{name} must be a list with one text (or None) per tweet, got a string")
            self._check_length(name, texts, num_tweets)
        return sources

    def _object_ids(self, objects: Any, tweet_index: int) -> list[int]:
        """Ids of a tweet's detected objects, highest score first, at most `max_objects`."""
        if objects is None:
            return []
        if isinstance(objects, Mapping):
            # datasets can hand a list of structs over as a struct of lists.
            labels, scores = objects.get("label", []), objects.get("score", [])
            objects = [{"label": label, "score": score} for label, score in zip(labels, scores, strict=True)]
        known = []
        for object_index, detected in enumerate(objects):
            label = detected.get("label") if isinstance(detected, Mapping) else None
            score = detected.get("score") if isinstance(detected, Mapping) else None
            if (
                not isinstance(label, str)
                or isinstance(score, bool)
                or not isinstance(score, int | float | np.floating)
                or not math.isfinite(score)
            ):
                raise ValueError(
                    f"tweet {tweet_index}, object {object_index}: expected {{'label': str, 'score': finite number}}, "
                    f"got {detected!r}"
                )
            if label not in self._object_label_ids:
                if label not in self.unknown_object_label_counts:
                    logger.warning(
                        "object label %r (tweet %d) is not in the processor's object_labels: such objects are "
                        "skipped and counted in processor.unknown_object_label_counts",
                        label,
                        tweet_index,
                    )
                self.unknown_object_label_counts[label] += 1
                continue
            known.append((float(score), self._object_label_ids[label]))
        known.sort(key=lambda item: -item[0])
        return [object_id for _, object_id in known[: self.max_objects]]

    def encode_windows(
        self,
        words: Sequence[Sequence[str]],
        word_labels: Sequence[Sequence[int]] | None = None,
        captions: Sequence[str | None] | None = None,
        objects: Sequence[Any] | None = None,
        text_sources: Mapping[str, Sequence[str | None]] | None = None,
    ) -> list[dict[str, Any]]:
        """Tokenise tweets into unpadded windows (the rows `pad_windows` and the data collator consume).

        Each window is a dict with `tweet_index`, `window_word_offset`, `words`, `input_ids`,
        (`token_type_ids`), `word_ids`, `word_shape_ids`, and when given `labels`, `<name>_input_ids` of
        each text source that is not a segment (`[]` where the tweet has none; `captions` is the `caption`
        source) and `object_ids` (unpadded, at most `max_objects`).
        """
        tweets = self._validate_words(words)
        num_tweets = len(tweets)
        labels = None
        if word_labels is not None:
            labels = self._validate_labels(word_labels, tweets)
        source_ids = {
            name: self._text_source_ids(name, texts)
            for name, texts in self._checked_text_sources(captions, text_sources, num_tweets).items()
        }
        segment_names = [name for name in self.segment_sources if name in source_ids]
        object_ids = None
        if objects is not None:
            self._check_length("objects", objects, num_tweets)
            if self.object_labels is None:
                raise ValueError(
                    "objects were given but this processor has no object_labels to map them to ids"
                )
            object_ids = [
                self._object_ids(tweet_objects, index) for index, tweet_objects in enumerate(objects)
            ]

        prefix_ids, prefix_types = self._special_prefix
        suffix_ids, suffix_types = self._special_suffix
        windows = []
        for tweet_index, (tweet, pieces) in enumerate(zip(tweets, self._word_pieces(tweets), strict=True)):
            shapes = [word_shape_id(word) for word in tweet]
            piece_counts = [len(word_pieces) for word_pieces in pieces]
            for start, end in plan_windows(piece_counts, self.window_capacity, self.stride):
                input_ids = list(prefix_ids)
                word_ids = [-1] * len(prefix_ids)
                for local_index, word_pieces in enumerate(pieces[start:end]):
                    input_ids += word_pieces
                    word_ids += [local_index] * len(word_pieces)
                segments = [source_ids[name][tweet_index] for name in segment_names]
                segments = [segment for segment in segments if segment]
                end_ids, end_types = list(suffix_ids), list(suffix_types)
                if segments:
                    (separator_ids, separator_types), (end_ids, end_types), segment_type = (
                        self._segment_layout
                    )
                    # [CLS] tweet [SEP] first [SEP] second [SEP]: a separator before each segment.
                    after_words = []
                    for index, segment in enumerate(segments):
                        input_ids += separator_ids + segment
                        # The separator after the tweet closes the first segment; later ones, a text source.
                        types = separator_types if index == 0 else [segment_type] * len(separator_ids)
                        after_words += types + [segment_type] * len(segment)
                    end_types = after_words + end_types
                input_ids += end_ids
                word_ids += [-1] * (len(input_ids) - len(word_ids))
                window = {
                    "tweet_index": tweet_index,
                    "window_word_offset": start,
                    "words": tweet[start:end],
                    "input_ids": input_ids,
                    "word_ids": word_ids,
                    "word_shape_ids": shapes[start:end],
                }
                if self.uses_token_type_ids:
                    content_types = [self._content_token_type] * (
                        len(input_ids) - len(prefix_ids) - len(end_types)
                    )
                    window["token_type_ids"] = list(prefix_types) + content_types + list(end_types)
                if labels is not None:
                    window["labels"] = labels[tweet_index][start:end]
                for name, ids in source_ids.items():
                    if name not in self.segment_sources:
                        window[f"{name}_input_ids"] = ids[tweet_index]
                if object_ids is not None:
                    window["object_ids"] = object_ids[tweet_index]
                windows.append(window)
        return windows

    @staticmethod
    def _check_length(name: str, values: Sequence, num_tweets: int) -> None:
        if len(values) != num_tweets:
            raise ValueError(f"{name} has {len(values)} entries for {num_tweets} tweets: give one per tweet")

    @staticmethod
    def _validate_words(words: Sequence[Sequence[str]]) -> list[list[str]]:
        if isinstance(words, str) or len(words) == 0:
            raise ValueError(f"words must be a non-empty list of tweets (lists of words), got {words!r}")
        tweets = []
        for tweet_index, tweet in enumerate(words):
            if isinstance(tweet, str) or not isinstance(tweet, Sequence):
                raise TypeError(f"tweet {tweet_index} must be a list of words, got {tweet!r}")
            if len(tweet) == 0:
                raise ValueError(f"tweet {tweet_index} has no words: nothing to tag")
            for word_index, word in enumerate(tweet):
                if not isinstance(word, str):
                    raise TypeError(f"tweet {tweet_index}, word {word_index} is not a string: {word!r}")
            tweets.append(list(tweet))
        return tweets

    def _validate_labels(
        self, word_labels: Sequence[Sequence[int]], tweets: list[list[str]]
    ) -> list[list[int]]:
        self._check_length("word_labels", word_labels, len(tweets))
        labels = []
        for tweet_index, (tweet_labels, tweet) in enumerate(zip(word_labels, tweets, strict=True)):
            tweet_labels = as_python_list(tweet_labels)
            if len(tweet_labels) != len(tweet):
                raise ValueError(f"tweet {tweet_index} has {len(tweet)} words but {len(tweet_labels)} labels")
            for word_index, label in enumerate(tweet_labels):
                if (
                    isinstance(label, bool)
                    or not isinstance(label, int | np.integer)
                    or (label < 0 and label != -100)
                ):
                    raise ValueError(
                        f"tweet {tweet_index}, word {word_index} ({tweet[word_index]!r}): label must be a label "
                        f"id >= 0 or -100, got {label!r}"
                    )
            labels.append([int(label) for label in tweet_labels])
        return labels

    # ----------------------------------------------------------------------------------------------
    # Padding windows into a batch

    def pad_windows(
        self,
        windows: Sequence[Mapping[str, Any]],
        return_window_info: bool = True,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Pad windows from `encode_windows` (or the training corpus's window rows) into model inputs.

        Returns `input_ids`, `attention_mask`, (`token_type_ids`), `word_ids` `(B, T)`; `word_mask`,
        `word_shape_ids` `(B, W)`; `neighbour_vectors` `(B, W, k, dim)`, `neighbour_weights` `(B, W, k)` when the
        processor has a table; `labels` `(B, W)`, `<name>_input_ids`, `<name>_attention_mask` `(B, C)` of
        each text source, `object_ids`, `object_mask` `(B, max_objects)` when the windows carry them; and with
        `return_window_info` the `(B,)` `overflow_to_sample_mapping` and `window_word_offset`.
        """
        data = padded_windows(
            windows,
            pad_token_id=self.tokenizer.pad_token_id,
            pad_token_type_id=self.tokenizer.pad_token_type_id if self.uses_token_type_ids else None,
            neighbour_table=self.neighbour_table,
            text_sources=self.granularity_sources,
            max_objects=self.max_objects,
            object_padding_id=self.object_padding_id,
        )
        if return_window_info:
            data["overflow_to_sample_mapping"] = np.array([w["tweet_index"] for w in windows], dtype=np.int64)
            data["window_word_offset"] = np.array([w["window_word_offset"] for w in windows], dtype=np.int64)
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------------------
    # Images

    def _pixel_inputs(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """`(n, 3, H, W)` pixel values and `(n,)` image mask; absent images are zeros with mask 0."""
        if self.image_processor is None:
            if any(image is not None for image in images):
                raise ValueError(
                    "images were given but this processor has no image_processor: pass image_features"
                )
        present = [index for index, image in enumerate(images) if image is not None]
        if present:
            processed = self.image_processor(
                images=[self._as_rgb(images[index]) for index in present], return_tensors="pt"
            )["pixel_values"]
        else:
            # No image in the batch: a blank image gives the size the backbone expects.
            processed = self.image_processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")[
                "pixel_values"
            ]
        processed = np.asarray(
            processed.detach().cpu().float() if isinstance(processed, torch.Tensor) else processed
        )
        pixel_values = np.zeros((len(images),) + processed.shape[1:], dtype=np.float32)
        image_mask = np.zeros((len(images),), dtype=np.int64)
        if present:
            pixel_values[present] = processed
            image_mask[present] = 1
        return pixel_values, image_mask

    @staticmethod
    def _as_rgb(image: Any) -> Any:
        # Tweet images come as RGBA, palette or grey-scale; the vision backbones want three channels.
        if isinstance(image, Image.Image) and image.mode != "RGB":
            return image.convert("RGB")
        return image

    @staticmethod
    def _feature_inputs(
        image_features: Any, image_mask: Any, num_tweets: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if image_mask is None:
            raise ValueError("image_features need an image_mask (n,): 1 where the tweet has an image")
        features = (
            image_features.detach().cpu().float().numpy()
            if isinstance(image_features, torch.Tensor)
            else None
        )
        features = np.asarray(image_features, dtype=np.float32) if features is None else features
        mask = np.asarray(as_python_list(image_mask), dtype=np.int64)
        if features.ndim != 3 or features.shape[0] != num_tweets or mask.shape != (num_tweets,):
            raise ValueError(
                f"expected image_features (n, R, D) and image_mask (n,) with n = {num_tweets} tweets, "
                f"got {tuple(features.shape)} and {tuple(mask.shape)}"
            )
        return features, mask

    # ----------------------------------------------------------------------------------------------
    # The one call

    def __call__(
        self,
        words: Sequence[str] | Sequence[Sequence[str]] | None = None,
        images: Any = None,
        objects: Sequence[Any] | None = None,
        captions: str | Sequence[str | None] | None = None,
        word_labels: Sequence[int] | Sequence[Sequence[int]] | None = None,
        *,
        text_sources: Mapping[str, str | Sequence[str | None]] | None = None,
        text: str | Sequence[str] | None = None,
        image_features: Any = None,
        image_mask: Any = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Encode one tweet or a batch of tweets into model inputs (see `pad_windows` for the keys).

        Args:
            words: a tweet as a list of words, or a list of such tweets.
            images: one image (PIL) or None per tweet, run through the image processor -> `pixel_values`
                `(B, 3, H, W)` and `image_mask` `(B,)`; a None image is a zero tensor with mask 0.
            objects: per tweet, a list of `{"label": str, "score": float}` detections.
            captions: per tweet, a caption string; "" or None gives an all-zero caption mask row.
            word_labels: per tweet, one label id per word (-100 to ignore a word).
            text_sources: name -> per tweet, a text of that source (`{"knowledge": [...]}`), like captions.
            text: instead of `words`: a tweet string or a list of them (a batch), each split into words with
                `split_tweet`, as the "multimodal-ner" pipeline splits a raw post.
            image_features: instead of `images`: precomputed `(n, R, D)` region features, with
                `image_mask` `(n,)`.

        Every tweet yields one window, or several overlapping ones when it holds more than
        `max_length` word pieces; `overflow_to_sample_mapping` `(B,)` gives each window's tweet and
        `window_word_offset` `(B,)` the index of its first word, for `merge_windows`.
        """
        if (words is None) == (text is None):
            raise ValueError("give exactly one of words (lists of words) or text (strings)")
        if images is not None and image_features is not None:
            raise ValueError("give images or image_features, not both")
        if text is not None:
            single = isinstance(text, str)
            words = [[word for word, _, _ in split_tweet(tweet)] for tweet in ([text] if single else text)]
        else:
            single = len(words) > 0 and isinstance(words[0], str)
            if single:
                words = [words]
        if single:
            images = None if images is None else [images]
            objects = None if objects is None else [objects]
            captions = None if captions is None else [captions]
            text_sources = {name: [texts] for name, texts in (text_sources or {}).items()}
            word_labels = None if word_labels is None else [word_labels]
            if image_features is not None and np.ndim(image_features) == 2:
                image_features = image_features[None]
                image_mask = None if image_mask is None else [int(np.asarray(image_mask).reshape(-1)[0])]
        elif isinstance(captions, str):
            raise TypeError("captions must be a list with one caption per tweet")

        windows = self.encode_windows(
            words, word_labels=word_labels, captions=captions, objects=objects, text_sources=text_sources
        )
        encoding = self.pad_windows(windows, return_window_info=True, return_tensors=None)
        tweet_of_window = encoding["overflow_to_sample_mapping"]
        if images is not None:
            if isinstance(images, Image.Image):
                raise TypeError("images must be a list with one image (or None) per tweet")
            self._check_length("images", images, len(words))
            pixel_values, mask = self._pixel_inputs(images)
            encoding["pixel_values"] = pixel_values[tweet_of_window]
            encoding["image_mask"] = mask[tweet_of_window]
        elif image_features is not None:
            features, mask = self._feature_inputs(image_features, image_mask, len(words))
            encoding["image_features"] = features[tweet_of_window]
            encoding["image_mask"] = mask[tweet_of_window]
        elif image_mask is not None:
            raise ValueError("image_mask was given without image_features")
        return BatchFeature(data=dict(encoding), tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------------------
    # Predictions

    merge_windows = staticmethod(merge_windows)


AutoProcessor.register(MGCMConfig, MGCMProcessor)

__all__ = ["MGCMProcessor", "NEIGHBOUR_TABLE_FOLDER"]
