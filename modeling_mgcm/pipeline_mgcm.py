"""`MultimodalNERPipeline`: tag raw posts (text, image, caption, knowledge and other named texts, objects) with
an MGCM model, registered as the transformers pipeline task "multimodal-ner".

```python
import modeling_mgcm  # registers the task
from transformers import pipeline

tagger = pipeline("multimodal-ner", model="outputs/mgcm")
tagger({"text": "Jordan visits Phoenix", "image": "photo.jpg", "caption": "a man on a court"})
# [{"entity_group": "PER", "word": "Jordan", "start": 0, "end": 6, "score": 0.97, "word_start": 0, "word_end": 1},
#  ...]
```

A post is `{"text": str | list[str], "image": path | URL | bytes | PIL.Image | None, "caption": str | None,
"objects": list | None, "image_id": str | None}` plus one `str | None` key per further text source of the
processor (`"knowledge"`, ...) (only `text` is required), or just the text. A raw string is
split into words with `split_tweet` (mentions, hashtags, URLs and emoji stay whole); a list of strings is taken
as the words, and offsets then index the words joined by single spaces. `image_id` names the image in the
`image_feature_cache` passed to the pipeline, whose precomputed features are used instead of the vision
backbone. With `knowledge_writer` (a callable `f(texts, captions) -> texts`, a transformers `text-generation`
pipeline or a `KnowledgeWriter`), a model that reads `knowledge` gets it written for every post whose
`knowledge` is missing or None, `batch_size` posts at a time (`""` means the post has none, and nothing is
written).

Outputs, per post:
- `aggregation="entities"` (default): a list of `{"entity_group", "word", "start", "end", "score",
  "word_start", "word_end"}`, one per entity of the CRF's Viterbi path (BIO read leniently: an `I-` tag after
  `O` or another type opens an entity). `start`/`end` are character offsets into the text (`end` exclusive),
  `word_start`/`word_end` word indices (`word_end` exclusive), `score` the mean CRF marginal probability of the
  entity's Viterbi tags.
- `aggregation="words"`: `{"text", "words", "entities", "image_error"}`: `words` holds, per word, `"word"`,
  `"start"`, `"end"`, `"tag"`, `"score"` (marginal of the tag), `"marginals"` (label -> probability) and
  `"gates"` (granularity -> mean gate value of that word, 0 for an input the post lacks); `image_error` is
  None, or why the post's image was left out (`on_bad_image="mask"`).
- `aggregation="words", output_attentions=True` adds what each word attended to, for the granularities the
  post has an input for (branch (a) of each cross-modal block, the direct word-to-input attention, averaged
  over heads). The post gets `"attended"`, granularity -> what the attention columns are: `"image"`:
  `{"pixel_values"}`, the `(3, H, W)` tensor the vision backbone saw (None for cached features); `"objects"`:
  the object labels the model read, highest score first; a text source (`"caption"`, ...): `{"text", "words",
  "truncated"}`, the part of the text the model read (the processor keeps its first pieces), its words as
  the tokenizer splits them, and whether that cut the text. Each word gets `"attention"`, granularity -> its
  weights over those columns: `(R,)` image regions (any leading non-spatial token included), one weight per
  object, and per text source one per word, the sum of its pieces' (the rest is on the special tokens).

A post longer than the processor's window is split into overlapping windows and merged back (every word is
tagged). A missing or undecodable image raises an `ImageLoadError` naming the input (`on_bad_image="error"`,
the default) or, with `on_bad_image="mask"`, gives a `BadImageWarning` and the post is tagged without its
image (text, caption and objects), which the "words" output records in `image_error`.
"""

import functools
import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import AutoModelForTokenClassification
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines.pt_utils import PipelineIterator

from .image_loading import MISSING, ImageLoadError
from .image_sources import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_URL_TIMEOUT, open_post_image
from .knowledge_writer import as_knowledge_writer
from .pipeline_batching import pad_window_batch
from .pipeline_outputs import aggregate_post, attended_inputs, merge_post_windows, window_words
from .pipeline_posts import NumberedPost, PreparedPost, check_post, processor_objects, words_and_spans

TASK_NAME = "multimodal-ner"
AGGREGATIONS = ("entities", "words")
ON_BAD_IMAGE = ("error", "mask")
POST_KEYS = ("text", "image", "caption", "objects", "image_id")
# The text source a `knowledge_writer` writes.
KNOWLEDGE_SOURCE = "knowledge"
# `_forward`'s outputs that are one Python value per window rather than a batch-first tensor.
PER_WINDOW_VALUES = ("granularity_attentions", "post", "window", "is_last")


class BadImageWarning(UserWarning):
    """A post's image could not be used and the post was tagged without it (`on_bad_image="mask"`)."""


class MultimodalNERPipeline(ChunkPipeline):
    """Named entity recognition on posts with an image, with an MGCM model (see the module docstring).

    Args (beyond the `Pipeline` ones; each may also be given per call):
        aggregation: "entities" (default) or "words".
        on_bad_image: "error" (default) or "mask".
        image_timeout: seconds allowed to fetch an image URL (default 10).
        max_image_bytes: largest image a URL may send (default 20 MiB).
        image_dir: the folder posts' image paths must name files in: relative paths are resolved against it,
            and a path outside it (absolute, or through `..`) is refused unopened (an `ImageLoadError`,
            reason "refused"). Give it for posts you do not trust. None: any path.
        image_url_hosts: the hosts (and their subdomains) image URLs may be fetched from, redirects
            included, e.g. `["pbs.twimg.com"]`; a URL elsewhere is refused unfetched (reason "refused").
            Empty: no URL is fetched. None: any host.
        image_feature_cache: an `ImageFeatureCache` (anything with `get(ids) -> (features (n, R, D),
            image_mask (n,))`) serving the features of posts that give an `image_id`.
        knowledge_writer: writes the `knowledge` of posts that lack it (see the module docstring).
        output_attentions: with `aggregation="words"`, add each word's attention over the post's inputs
            (see the module docstring; default False).

    A `ChunkPipeline`: `preprocess` reads a post and yields one model item per window (a post longer than the
    processor's window gives several, a post without words one empty item), the base class's DataLoader
    groups `batch_size` consecutive items into one model call, and `postprocess` merges a post's windows. So
    `batch_size` counts windows, not posts (a long post's windows may fall in two model calls); `_forward` pads
    them with the processor's own padding. A `knowledge_writer` gets the posts lacking knowledge `batch_size`
    posts at a time. `num_workers=1` reads posts (images, tokenising, knowledge writing) in a DataLoader worker
    process while the model runs; `ChunkPipeline` allows no more than one, the worker's warnings (such as
    `BadImageWarning`) are not the caller's, and its errors come back as torch's `RuntimeError` quoting the
    original. The model is put in eval mode and runs on the pipeline's `device` under `torch.inference_mode`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not callable(getattr(self.processor, "encode_windows", None)):
            raise ValueError(
                f"the {TASK_NAME} pipeline needs the model's MGCMProcessor: pass processor=..., or a model folder "
                f"that holds one; got {type(self.processor).__name__}"
            )
        if getattr(self.model.config, "model_type", None) != "mgcm":
            raise ValueError(
                f"the {TASK_NAME} pipeline needs an MGCM model, got {type(self.model).__name__} "
                f"(model_type {getattr(self.model.config, 'model_type', None)!r})"
            )
        self.model.eval()
        config = self.model.config
        self.id2label = {int(index): label for index, label in config.id2label.items()}
        self.uses_image = bool(config.use_image)
        self.uses_objects = bool(config.use_objects) and self.processor.object_labels is not None
        self.granularities = list(config.granularities)
        self._warned_unused = set()

    @functools.cached_property
    def text_sources(self) -> list[str]:
        """The text sources the model reads: as their granularity, or as text segments (PGIM's way)."""
        # Computed on first use: `Pipeline.__init__` sanitises the parameters (which read it) after setting the
        # model and processor but before this class's __init__ body runs.
        return [
            name
            for name in self.processor.text_sources
            if name in self.model.config.text_sources or name in self.processor.segment_sources
        ]

    @functools.cached_property
    def post_keys(self) -> tuple[str, ...]:
        """The keys a post may have: `POST_KEYS` and every text source of the processor."""
        return (*POST_KEYS, *(name for name in self.processor.text_sources if name not in POST_KEYS))

    # ------------------------------------------------------------------------------------------------
    # Parameters

    def _sanitize_parameters(
        self,
        aggregation: str | None = None,
        on_bad_image: str | None = None,
        image_timeout: float | None = None,
        max_image_bytes: int | None = None,
        image_dir: str | None = None,
        image_url_hosts: Sequence[str] | None = None,
        image_feature_cache: Any = None,
        knowledge_writer: Any = None,
        output_attentions: bool | None = None,
        **unknown,
    ) -> tuple[dict, dict, dict]:
        if unknown.keys() & {"backend", "runtime", "int8"}:
            raise TypeError(
                f"{sorted(unknown.keys() & {'backend', 'runtime', 'int8'})} are options of the model, which "
                f"pipeline() loads before the {TASK_NAME} pipeline reads its arguments: pass "
                "model_kwargs={'runtime': 'onnx'} (and 'int8': True), or an MGCMOnnxForTokenClassification as model"
            )
        if unknown:
            raise TypeError(
                f"unknown {TASK_NAME} pipeline argument(s) {sorted(unknown)}; it takes aggregation, on_bad_image, "
                "image_timeout, max_image_bytes, image_dir, image_url_hosts, image_feature_cache, knowledge_writer, "
                "output_attentions, batch_size and device"
            )
        preprocess_params: dict[str, Any] = {}
        forward_params: dict[str, Any] = {}
        postprocess_params: dict[str, Any] = {}
        if aggregation is not None:
            if aggregation not in AGGREGATIONS:
                raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
            postprocess_params["aggregation"] = aggregation
        if on_bad_image is not None:
            if on_bad_image not in ON_BAD_IMAGE:
                raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
            preprocess_params["on_bad_image"] = on_bad_image
        if image_timeout is not None:
            if isinstance(image_timeout, bool) or not image_timeout > 0:
                raise ValueError(f"image_timeout must be a positive number of seconds, got {image_timeout!r}")
            preprocess_params["image_timeout"] = float(image_timeout)
        if max_image_bytes is not None:
            if (
                isinstance(max_image_bytes, bool)
                or not isinstance(max_image_bytes, int)
                or max_image_bytes < 1
            ):
                raise ValueError(f"max_image_bytes must be a positive integer, got {max_image_bytes!r}")
            preprocess_params["max_image_bytes"] = max_image_bytes
        if image_dir is not None:
            preprocess_params["image_dir"] = image_dir
        if image_url_hosts is not None:
            if isinstance(image_url_hosts, str) or not all(isinstance(host, str) for host in image_url_hosts):
                raise TypeError(f"image_url_hosts must be a list of host names, got {image_url_hosts!r}")
            preprocess_params["image_url_hosts"] = tuple(image_url_hosts)
        if image_feature_cache is not None:
            if not callable(getattr(image_feature_cache, "get", None)):
                raise TypeError(
                    "image_feature_cache must have get(ids) -> (features, image_mask), got "
                    f"{type(image_feature_cache).__name__}"
                )
            preprocess_params["image_feature_cache"] = image_feature_cache
        if knowledge_writer is not None:
            if KNOWLEDGE_SOURCE not in self.text_sources:
                raise ValueError(
                    f"knowledge_writer was given but this MGCM model does not read {KNOWLEDGE_SOURCE!r} (its text "
                    f"sources: {self.text_sources or 'none'})"
                )
            preprocess_params["knowledge_writer"] = as_knowledge_writer(knowledge_writer)
        if output_attentions is not None:
            if not isinstance(output_attentions, bool):
                raise ValueError(f"output_attentions must be True or False, got {output_attentions!r}")
            # The posts' inputs are described, the model returns its attention, the words get it.
            preprocess_params["output_attentions"] = output_attentions
            forward_params["output_attentions"] = output_attentions
            postprocess_params["output_attentions"] = output_attentions
        return preprocess_params, forward_params, postprocess_params

    @staticmethod
    def _check_output_options(postprocess_params: Mapping[str, Any]) -> None:
        # Checked on the merged options, those given when the pipeline was made and those of the call.
        if postprocess_params.get("output_attentions") and postprocess_params.get("aggregation") != "words":
            raise ValueError(
                "output_attentions=True adds each word's attention to the words output: pass aggregation='words'"
            )

    # ------------------------------------------------------------------------------------------------
    # Calls: posts in, each post yielding one model item per window

    def __call__(self, inputs, *args, **kwargs):
        """Tag one post (a dict or a string) or a list of posts; a generator or `datasets.Dataset` of posts is
        tagged lazily (an iterator of outputs is returned)."""
        # Overridden for what the base class does not do: it reads an empty list's first item (to detect chats),
        # takes a tuple for one input, and returns a lazy input's outputs as an iterable that `next` cannot read.
        if isinstance(inputs, list | tuple) and len(inputs) == 0:
            return []
        outputs = super().__call__(list(inputs) if isinstance(inputs, tuple) else inputs, *args, **kwargs)
        return iter(outputs) if isinstance(outputs, PipelineIterator) else outputs

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ) -> Iterator[Any]:
        # Overridden only to wrap the inputs before the base class's DataLoader: each post numbered, so that an
        # error names the input, and with a knowledge_writer given its knowledge `batch_size` posts at a time.
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self._check_output_options(postprocess_params)
        preprocess_params = dict(preprocess_params)
        writer = preprocess_params.pop("knowledge_writer", None)
        posts = self._numbered_posts(inputs, writer, batch_size)
        return super().get_iterator(
            posts, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
        )

    def _numbered_posts(self, inputs: Iterable[Any], writer, batch_size: int) -> Iterator[NumberedPost]:
        """The inputs, numbered from 0, read lazily; with a knowledge `writer`, `batch_size` at a time, those
        without `knowledge` (missing or None) given the writer's."""
        if writer is None:
            for index, post in enumerate(inputs):
                yield NumberedPost(index, post)
            return
        iterator = iter(inputs)
        first_index = 0
        while batch := list(itertools.islice(iterator, batch_size)):
            for offset, post in enumerate(self._with_written_knowledge(batch, writer, first_index)):
                yield NumberedPost(first_index + offset, post)
            first_index += len(batch)

    def _with_written_knowledge(self, batch: list[Any], writer, first_index: int) -> list[dict[str, Any]]:
        """The posts of a batch, those without `knowledge` (missing or None) given the writer's."""
        posts = []
        for offset, post in enumerate(batch):
            try:
                posts.append(check_post(post, self.post_keys, self.processor.text_sources))
            except (TypeError, ValueError) as error:
                raise type(error)(f"input {first_index + offset}: {error}") from error
        lacking = [post for post in posts if post.get(KNOWLEDGE_SOURCE) is None]
        if lacking:
            texts = [words_and_spans(post["text"])[0] for post in lacking]
            written = writer(texts, [post.get("caption") for post in lacking])
            for post, knowledge in zip(lacking, written, strict=True):
                post[KNOWLEDGE_SOURCE] = knowledge
        return posts

    # ------------------------------------------------------------------------------------------------
    # One post -> words, windows and image -> one model item per window

    def _warn_unused(self, what: str) -> None:
        if what not in self._warned_unused:
            self._warned_unused.add(what)
            warnings.warn(f"this MGCM model does not use {what}: they are ignored", UserWarning, stacklevel=4)

    def preprocess(self, inputs: Any, **prepare_options: Any) -> Iterator[dict[str, Any]]:
        """One post (or a `NumberedPost`) -> one model item per window, `{"post": PreparedPost, "window": index
        into its windows, "is_last": bool}`; a post without words gives one item with `"window": None`. The post
        is read by `prepare_post` with `prepare_options`; its errors name the input's index."""
        index, post = (inputs.index, inputs.post) if isinstance(inputs, NumberedPost) else (None, inputs)
        where = "" if index is None else f"input {index}: "
        try:
            prepared = self.prepare_post(post, **prepare_options)
        except ImageLoadError as error:
            raise ImageLoadError(f"{where}image {error.source}", error.reason, error.detail) from None
        except (TypeError, ValueError) as error:
            error_type = TypeError if isinstance(error, TypeError) else ValueError
            raise error_type(f"{where}{error}") from error
        if not prepared.windows:
            yield {"post": prepared, "window": None, "is_last": True}
        for window in range(len(prepared.windows)):
            yield {"post": prepared, "window": window, "is_last": window == len(prepared.windows) - 1}

    def prepare_post(
        self,
        post: Any,
        on_bad_image: str = "error",
        image_timeout: float = DEFAULT_URL_TIMEOUT,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        image_dir: str | None = None,
        image_url_hosts: Sequence[str] | None = None,
        image_feature_cache: Any = None,
        output_attentions: bool = False,
    ) -> PreparedPost:
        """One raw post -> its words, windows (`processor.encode_windows`) and image: `pixel_values` (3, H, W)
        or cached `image_features` (R, D); with `output_attentions`, `attended` and `piece_words` are filled
        (see `attended_inputs`)."""
        post = check_post(post, self.post_keys, self.processor.text_sources)
        text, words, spans = words_and_spans(post["text"])
        prepared = PreparedPost(text=text, words=words, spans=spans)
        image, image_id = post.get("image"), post.get("image_id")
        if image is not None and image_id is not None:
            raise ValueError("give a post's 'image' or its 'image_id' (cached features), not both")
        if (image is not None or image_id is not None) and not self.uses_image:
            self._warn_unused("images")
        elif image is not None or image_id is not None:
            try:
                if image_id is not None:
                    prepared.image_features = self._cached_features(image_id, image_feature_cache)
                else:
                    prepared.pixel_values = self._pixel_values(
                        open_post_image(
                            image,
                            timeout=image_timeout,
                            max_bytes=max_image_bytes,
                            image_dir=image_dir,
                            url_hosts=image_url_hosts,
                        )
                    )
            except ImageLoadError as error:
                if on_bad_image == "error":
                    raise ImageLoadError(
                        error.source,
                        error.reason,
                        f"{error.detail}; pass on_bad_image='mask' to tag such posts from their text",
                    ) from None
                prepared.image_error = str(error)
                warnings.warn(
                    f"image left out, post tagged from its text: {error}", BadImageWarning, stacklevel=2
                )
        if not words:
            return prepared
        objects = post.get("objects")
        if objects and not self.uses_objects:
            self._warn_unused("detected objects")
        for name in self.processor.text_sources:
            if post.get(name) and name not in self.text_sources:
                self._warn_unused(f"{name} texts")
        prepared.windows = self.processor.encode_windows(
            [words],
            objects=[processor_objects(objects)] if self.uses_objects else None,
            text_sources={name: [post.get(name)] for name in self.text_sources},
        )
        if output_attentions:
            prepared.attended, prepared.piece_words = attended_inputs(
                post, prepared, self.processor, self.granularities
            )
        return prepared

    def _pixel_values(self, image) -> torch.Tensor:
        if self.processor.image_processor is None or self.model.config.vision_config is None:
            raise ValueError(
                "this MGCM model reads precomputed image features, not images: pass "
                "image_feature_cache=ImageFeatureCache(...) and give each post an 'image_id'"
            )
        pixel_values = self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return torch.as_tensor(pixel_values)[0].float()

    @staticmethod
    def _cached_features(image_id: str, cache: Any) -> torch.Tensor:
        if cache is None:
            raise ValueError(
                f"the post gives image_id {image_id!r} but the pipeline has no image_feature_cache"
            )
        try:
            features, image_mask = cache.get([image_id])
        except KeyError as error:
            raise ImageLoadError(
                f"image_id {image_id!r}", MISSING, f"not in the image feature cache: {error}"
            ) from None
        if int(image_mask[0]) == 0:
            raise ImageLoadError(
                f"image_id {image_id!r}",
                MISSING,
                "the image feature cache records its image as missing or corrupt",
            )
        return torch.as_tensor(features[0]).float()

    # ------------------------------------------------------------------------------------------------
    # Model: a batch of window items -> per-window tensors

    def get_inference_context(self):
        return torch.inference_mode

    def _forward(self, model_inputs: dict[str, Any], output_attentions: bool = False) -> dict[str, Any]:
        """A batch of B window items (`preprocess`'s, as the base class collates them: per key a list) -> per
        window, batch-first so that the base class can unbatch them: `predictions` (B, W), `marginals`
        (B, W, L), `gates` (B, W, G) (the config's granularities, 0 where the batch has no such input),
        `word_mask` (B, W), with `output_attentions` `granularity_attentions` (per window, granularity ->
        (W, N)), and the items' `post`, `window` and `is_last`. A wordless item's row has no words.

        At `batch_size=1` the base class passes the item itself, uncollated; it gets B = 1 and its own values.
        """
        single = isinstance(model_inputs["is_last"], bool)
        items = {key: [value] for key, value in model_inputs.items()} if single else model_inputs
        posts, windows = items["post"], items["window"]
        rows = [row for row, window in enumerate(windows) if window is not None]
        outputs = self._run_model(
            [posts[row] for row in rows], [windows[row] for row in rows], output_attentions
        )
        if len(rows) < len(windows):
            outputs = self._with_wordless_rows(outputs, rows, len(windows))
        outputs.update(post=list(posts), window=list(windows), is_last=list(items["is_last"]))
        if single:
            outputs |= {key: outputs[key][0] for key in PER_WINDOW_VALUES if key in outputs}
        return outputs

    def _run_model(
        self, posts: Sequence[PreparedPost], windows: Sequence[int], output_attentions: bool
    ) -> dict[str, Any]:
        """The model on window `windows[i]` of `posts[i]`, padded into one batch on the pipeline's device: the
        per-window outputs of `_forward` (without the items' values); W = 0 when there is no window."""
        if not posts:
            return {
                "predictions": torch.zeros((0, 0), dtype=torch.long),
                "marginals": torch.zeros((0, 0, len(self.id2label))),
                "gates": torch.zeros((0, 0, len(self.granularities))),
                "word_mask": torch.zeros((0, 0), dtype=torch.bool),
                **({"granularity_attentions": []} if output_attentions else {}),
            }
        model_inputs = pad_window_batch(
            [post.windows[window] for post, window in zip(posts, windows, strict=True)],
            [post.pixel_values for post in posts],
            [post.image_features for post in posts],
            self.processor,
        )
        # Padded here, after the base class moved the items to the device: the batch is moved now.
        model_inputs = self._ensure_tensor_on_device(model_inputs, self.device)
        pixel_rows = model_inputs.pop("pixel_rows", None)
        if pixel_rows is not None:
            # Some rows bring raw images and some cached features: the frozen backbone turns the former into
            # features, so the model reads one kind.
            rows = pixel_rows.nonzero().squeeze(1)
            pixel_values = model_inputs.pop("pixel_values")
            features = self.model.extract_image_features(pixel_values[rows])
            image_features = model_inputs["image_features"].to(features.dtype)
            model_inputs["image_features"] = image_features.index_copy(0, rows, features)
        model = self.model
        for name in ("pixel_values", "image_features", "neighbour_vectors", "neighbour_weights"):
            if name in model_inputs:
                model_inputs[name] = model_inputs[name].to(model.dtype)
        output = model(**model_inputs, output_attentions=output_attentions, return_dict=True)
        word_mask = model_inputs["word_mask"].bool()
        if model.crf is not None:
            marginals = model.crf.marginals(output.logits, word_mask)
        else:
            marginals = torch.softmax(output.logits.float(), dim=-1) * word_mask.unsqueeze(-1)
        # One (B, W, G) tensor rather than a dict: the base class cannot unbatch a dict's values.
        gate_values = output.gate_values or {}
        gates = torch.zeros((*word_mask.shape, len(self.granularities)), device=word_mask.device)
        for position, name in enumerate(self.granularities):
            if name in gate_values:
                gates[..., position] = gate_values[name]
        outputs = {
            "predictions": output.predictions,
            "marginals": marginals,
            "gates": gates,
            "word_mask": word_mask,
        }
        if output_attentions:
            attentions = dict(output.granularity_attentions or {})
            # Per window a dict, which the base class unbatches as a list item.
            outputs["granularity_attentions"] = [
                {name: weights[row] for name, weights in attentions.items()} for row in range(len(posts))
            ]
        return outputs

    @staticmethod
    def _with_wordless_rows(outputs: dict[str, Any], rows: Sequence[int], num_rows: int) -> dict[str, Any]:
        """The model's outputs for `rows` spread over all `num_rows` items, the others' rows empty."""
        spread: dict[str, Any] = {}
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor):
                spread[key] = value.new_zeros((num_rows, *value.shape[1:]))
                spread[key][list(rows)] = value
            else:
                spread[key] = [{} for _ in range(num_rows)]
                for position, row in enumerate(rows):
                    spread[key][row] = value[position]
        return spread

    # ------------------------------------------------------------------------------------------------
    # Outputs: a post's windows merged

    def postprocess(
        self,
        window_outputs: Sequence[Mapping[str, Any]],
        aggregation: str = "entities",
        output_attentions: bool = False,
    ) -> Any:
        """A post's window outputs (`_forward`'s rows, in window order) -> entities (or, with
        `aggregation="words"`, the per-word record, with `output_attentions` each word's attention and the
        post's attended inputs; see `aggregate_post`)."""
        post = window_outputs[0]["post"]
        if post.windows:
            windows = [window_words(output) for output in window_outputs]
            merged = merge_post_windows(post, windows, [output["window"] for output in window_outputs])
        else:
            merged = merge_post_windows(post, [], [])
        return aggregate_post(merged, self.id2label, self.granularities, aggregation, output_attentions)


PIPELINE_REGISTRY.register_pipeline(
    TASK_NAME,
    pipeline_class=MultimodalNERPipeline,
    pt_model=AutoModelForTokenClassification,
    type="multimodal",
)

__all__ = [
    "AGGREGATIONS",
    "BadImageWarning",
    "MultimodalNERPipeline",
    "KNOWLEDGE_SOURCE",
    "ON_BAD_IMAGE",
    "POST_KEYS",
    "TASK_NAME",
]
