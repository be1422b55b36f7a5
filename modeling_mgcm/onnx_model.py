"""`MGCMOnnxForTokenClassification`: an exported MGCM (see `onnx_export`) on ONNX Runtime, with the inference
interface of `MGCMForTokenClassification` that the "multimodal-ner" pipeline uses: `config`, `device`, `dtype`,
`crf`, `eval()`, `to()`, `extract_image_features(pixel_values)` and a forward returning emissions, Viterbi tags
and gate values. The torch weights are never loaded when fresh ONNX files are there.

```python
model = MGCMOnnxForTokenClassification.from_pretrained("outputs/mgcm", int8=True)
tagger = pipeline("multimodal-ner", model=model, processor="outputs/mgcm")
# or, the same through transformers' loading:
tagger = pipeline("multimodal-ner", model="outputs/mgcm", model_kwargs={"runtime": "onnx", "int8": True})
```

Which files: the folder's `onnx/` (written by `mgcm-export-onnx` or `model.export_to_onnx`). Without one, the
model is exported once from the folder's weights into a cache (`onnx_cache_dir`, by default
`$HF_HOME/mgcm-onnx/<fingerprint>/onnx`), and the cache is used from then on. Files whose recorded fingerprint
disagrees with the folder's `model.safetensors` or `config.json` are refused (`StaleOnnxError`). The weights
are checked by hashing the file, never by loading it; where no weight file is on this machine (a folder
shipped with ONNX files only, a Hub model whose weights were never downloaded) only `config.json` is checked.

Shapes: B = batch, T = word pieces, W = words, L = labels, R = image regions, D_v = region width.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers.utils import cached_file

from .configuration_mgcm import MGCMConfig
from .crf import ConditionalRandomField, decode_tags
from .modeling_mgcm import TEXT_SOURCE_INPUT, MGCMTokenClassifierOutput, first_piece_positions
from .onnx_export import (
    EXPORT_HINT,
    FORMAT_VERSION,
    MODEL_FILE,
    ONNX_SUBFOLDER,
    QUANTIZED_FILE,
    VISION_FILE,
    MetadataKey,
    config_sha256,
    import_onnx_package,
    weight_files,
    weights_sha256,
)

logger = logging.getLogger(__name__)

# `from_pretrained` keywords that transformers' loading (the Auto classes, `pipeline()`) passes and that mean
# nothing to an ONNX graph.
_TORCH_LOADING_KWARGS = frozenset(
    {
        "_from_auto",
        "_from_pipeline",
        "adapter_kwargs",
        "attn_implementation",
        "code_revision",
        "key_mapping",
        "trust_remote_code",
        "use_safetensors",
    }
)
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
# The options of `from_pretrained` that only the ONNX runtime takes.
ONNX_OPTIONS = ("int8", "providers", "session_options", "onnx_cache_dir")
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(bool)": np.bool_}


class StaleOnnxError(ValueError):
    """An ONNX file was exported from other weights or another config than the folder holds now."""


def default_cache_dir() -> Path:
    """Where models without ONNX files are exported on first use: `$HF_HOME/mgcm-onnx`."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mgcm-onnx"


class MGCMOnnxForTokenClassification:
    """An MGCM token classifier running on ONNX Runtime sessions (see the module docstring).

    Build it with `from_pretrained`. `crf` is the torch `ConditionalRandomField` with the exported model's
    parameters (None for a model without CRF), so Viterbi and marginals are the torch model's.
    """

    main_input_name = "input_ids"
    input_modalities = ("text", "image")

    def __init__(
        self, config: MGCMConfig, session: Any, vision_session: Any = None, name_or_path: str = ""
    ) -> None:
        self.config = config
        self.session = session
        self.vision_session = vision_session
        self.name_or_path = name_or_path
        # The graph file `from_pretrained` loaded (the folder's, or the cache's).
        self.model_path: Path | None = None
        self.device = torch.device("cpu")
        metadata = session.get_modelmeta().custom_metadata_map
        self.granularities = json.loads(metadata[MetadataKey.GRANULARITIES])
        if self.granularities != list(config.granularities):
            raise ValueError(
                f"{name_or_path}: the ONNX graph's granularities {self.granularities} are not the config's "
                f"{list(config.granularities)}"
            )
        self.crf = None
        if config.use_crf:
            parameters = json.loads(metadata[MetadataKey.CRF])
            self.crf = ConditionalRandomField(config.num_labels)
            with torch.no_grad():
                for name, values in parameters.items():
                    getattr(self.crf, name).copy_(torch.tensor(values, dtype=torch.float32))
            self.crf.eval()
        self._input_types = {value.name: _ORT_TYPES[value.type] for value in session.get_inputs()}
        self._output_names = [value.name for value in session.get_outputs()]

    # ------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: MGCMConfig | None = None,
        int8: bool = False,
        providers: list | None = None,
        session_options: Any = None,
        onnx_cache_dir: str | os.PathLike | None = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> "MGCMOnnxForTokenClassification":
        """Load the exported ONNX files of a model folder (or Hub id), exporting them once if it has none.

        Args:
            pretrained_model_name_or_path: a folder written by `examples/train.py` or the Hub export, or a Hub id.
            config: its `MGCMConfig` (read from the folder by default).
            int8: run `onnx/model_quantized.onnx` (made from a fresh `model.onnx` on first use if missing).
            providers: ONNX Runtime execution providers, e.g. `["CUDAExecutionProvider", "CPUExecutionProvider"]`
                (default: CPU).
            session_options: an `onnxruntime.SessionOptions`, or a dict of its attributes, e.g.
                `{"intra_op_num_threads": 4, "inter_op_num_threads": 1}` (the form `pipeline(model_kwargs=...)`
                needs: transformers deep-copies those, and a SessionOptions cannot be copied).
            onnx_cache_dir: where a folder without ONNX files is exported (default `default_cache_dir()`).
            dtype: float32 only (None and "auto" too, as `pipeline()` passes it).
            kwargs: the Hub download options (`revision`, `token`, `cache_dir`, `local_files_only`, `subfolder`,
                ...); the other keywords of transformers' torch loading are ignored.
        """
        ort = import_onnx_package("onnxruntime")
        hub_kwargs = _hub_kwargs(kwargs)
        if dtype not in (None, "auto", "float32", torch.float32):
            raise ValueError(
                f"the ONNX runtime runs float32 graphs (int8 with int8=True), not dtype={dtype!r}"
            )
        source = str(pretrained_model_name_or_path)
        config_file = cached_file(source, "config.json", **hub_kwargs)
        if config is None:
            config = MGCMConfig.from_pretrained(source, **hub_kwargs)
        options = _session_options(ort, session_options)
        providers = _checked_providers(ort, providers)
        files = _FileResolver(source, hub_kwargs, config_sha256(config_file))
        model_path, vision_path = files.resolve(config, int8, onnx_cache_dir)

        def session(path: Path) -> Any:
            created = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            files.check_fresh(path, created.get_modelmeta().custom_metadata_map)
            return created

        vision_session = session(vision_path) if vision_path is not None else None
        model = cls(config, session(model_path), vision_session, name_or_path=source)
        model.model_path = model_path
        return model

    # ------------------------------------------------------------------------------------------------
    # The torch model's inference interface

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def eval(self) -> "MGCMOnnxForTokenClassification":
        return self

    def train(self, mode: bool = True) -> "MGCMOnnxForTokenClassification":
        if mode:
            raise ValueError("an ONNX model cannot be trained: train the torch model and export it again")
        return self

    def to(self, device: str | torch.device) -> "MGCMOnnxForTokenClassification":
        """The device the outputs are returned on (the sessions' `providers` decide where the graph runs)."""
        self.device = torch.device(device)
        if self.crf is not None:
            self.crf.to(self.device)
        return self

    def can_generate(self) -> bool:
        return False

    def __call__(self, *args: Any, **kwargs: Any) -> MGCMTokenClassifierOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids: Tensor,
        word_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        word_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_features: Tensor | None = None,
        image_mask: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
        **inputs: Tensor | None,
    ) -> MGCMTokenClassifierOutput:
        """The torch model's forward at inference: `logits` (B, W, L), `predictions` (B, W) (Viterbi, -100 at
        padding words) and `gate_values` (granularity -> (B, W)), on `self.device`.

        The inputs are the torch model's (`inputs` holds `word_shape_ids`, the neighbours, `object_ids`,
        `object_mask` and each text source's `<name>_input_ids` / `<name>_attention_mask`); an input the
        graph reads but the batch lacks is given as absent (an all-zero mask), as the torch model does.
        """
        if labels is not None:
            raise ValueError(
                "the ONNX model computes no loss: train and evaluate losses with the torch model"
            )
        if output_attentions or output_hidden_states:
            raise ValueError(
                "the ONNX graph returns emissions and gates only: load the torch model (runtime='torch') for "
                "output_attentions or output_hidden_states"
            )
        word_mask = _word_mask(word_ids, word_mask)
        given = dict(inputs, input_ids=input_ids, word_ids=word_ids, word_mask=word_mask)
        given.update(attention_mask=attention_mask, token_type_ids=token_type_ids)
        given.update(self._image_inputs(input_ids.shape[0], pixel_values, image_features, image_mask))
        unknown = sorted(set(given) - set(self._input_types) - _OPTIONAL_INPUTS)
        unknown = [name for name in unknown if not TEXT_SOURCE_INPUT.fullmatch(name)]
        if unknown:
            raise TypeError(f"MGCM forward got unexpected keyword arguments {unknown}")
        outputs = self.session.run(self._output_names, self._feed(given))
        logits = torch.from_numpy(outputs[0]).to(self.device)
        word_mask = word_mask.to(self.device).bool()
        gate_values = {}
        if len(outputs) > 1:
            gates = torch.from_numpy(outputs[1]).to(self.device)
            gate_values = {name: gates[..., index] for index, name in enumerate(self.granularities)}
        output = MGCMTokenClassifierOutput(
            logits=logits, predictions=self.decode(logits, word_mask), gate_values=gate_values
        )
        return output if return_dict else output.to_tuple()

    def decode(self, logits: Tensor, word_mask: Tensor) -> Tensor:
        """(B, W, L), (B, W) -> (B, W) long tags, -100 at padding: Viterbi with the CRF, else argmax."""
        return decode_tags(logits, word_mask, self.crf)

    def extract_image_features(self, pixel_values: Tensor) -> Tensor:
        """Region features of the exported vision backbone: (B, 3, H, W) -> (B, R, D_v), on `self.device`."""
        if self.vision_session is None:
            raise ValueError(
                "this MGCM config has no vision_config, so the model cannot read pixel_values: pass "
                f"precomputed image_features (B, R, {self.config.image_feature_dim}) instead"
            )
        expected = self.vision_session.get_inputs()[0].shape[1:]
        if pixel_values.dim() != 4 or any(
            isinstance(want, int) and size != want
            for size, want in zip(pixel_values.shape[1:], expected, strict=True)
        ):
            raise ValueError(
                f"pixel_values have shape {tuple(pixel_values.shape)} but the exported vision backbone takes "
                f"(B, {', '.join(map(str, expected))}): export again with the image processor's size"
            )
        pixel_values = pixel_values.detach().cpu().float().numpy()
        (features,) = self.vision_session.run(None, {"pixel_values": pixel_values})
        return torch.from_numpy(features).to(self.device)

    # ------------------------------------------------------------------------------------------------
    # Feeding the graph

    def _image_inputs(
        self,
        batch_size: int,
        pixel_values: Tensor | None,
        image_features: Tensor | None,
        image_mask: Tensor | None,
    ) -> dict[str, Tensor | None]:
        if "image_features" not in self._input_types:
            return {}
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass either pixel_values or precomputed image_features, not both")
        if pixel_values is not None:
            image_features = self.extract_image_features(pixel_values)
        if image_features is None:
            # No image in the batch: one masked region per row, as the torch model gives itself.
            image_features = torch.zeros(batch_size, 1, self.config.image_feature_dim)
            image_mask = torch.zeros(batch_size, dtype=torch.long)
        elif image_mask is None:
            image_mask = torch.ones(batch_size, dtype=torch.long)
        return {"image_features": image_features, "image_mask": image_mask}

    def _feed(self, given: dict[str, Tensor | None]) -> dict[str, np.ndarray]:
        """The session's inputs: each graph input from `given`, or its absent value (see `forward`)."""
        feed = {}
        for name, dtype in self._input_types.items():
            value = given.get(name)
            if value is None:
                value = self._absent(name, given)
            feed[name] = value.detach().cpu().numpy().astype(dtype, copy=False)
        return feed

    def _absent(self, name: str, given: dict[str, Tensor | None]) -> Tensor:
        """The value of a graph input the batch lacks: what the torch model puts there itself."""
        input_ids = given["input_ids"]
        no_input = torch.zeros(input_ids.shape[0], 1, dtype=torch.long)
        padding_id = len(self.config.object_labels)
        if name == "attention_mask":
            return torch.ones_like(input_ids)
        if name == "token_type_ids":
            return torch.zeros_like(input_ids)
        if name == "object_ids":
            return no_input + padding_id
        if name == "object_mask":
            object_ids = given.get("object_ids")
            return no_input if object_ids is None else (object_ids != padding_id).long()
        source = TEXT_SOURCE_INPUT.fullmatch(name)
        if source and given.get(f"{source['name']}_input_ids") is None:
            return no_input
        raise ValueError(_missing_input_message(name, self.config))


# Inputs the graph need not have: the torch model takes them but the config may not use them.
_OPTIONAL_INPUTS = frozenset(
    {
        "token_type_ids",
        "word_shape_ids",
        "neighbour_vectors",
        "neighbour_weights",
        "image_features",
        "image_mask",
        "object_ids",
        "object_mask",
    }
)


def _missing_input_message(name: str, config: MGCMConfig) -> str:
    if name == "word_shape_ids":
        return "config.use_word_shape=True needs word_shape_ids (B, W) (modeling_mgcm.word_shape), got none"
    if name.startswith("neighbour_"):
        return (
            f"config.augmentation_mode={config.augmentation_mode!r} needs neighbour_vectors (B, W, k, dim) and "
            "neighbour_weights (B, W, k) (the processor's neighbour table)"
        )
    if name.endswith("_attention_mask"):
        source = name[: -len("_attention_mask")]
        return f"{source}_input_ids need {source}_attention_mask (an all-zero row means no {source} for that post)"
    return f"the ONNX graph needs {name}, got none"


def _word_mask(word_ids: Tensor, word_mask: Tensor | None) -> Tensor:
    if word_mask is not None:
        return word_mask
    num_words = int(word_ids.max().clamp(min=0)) + 1
    return first_piece_positions(word_ids, num_words)[1].long()


def _hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(HUB_KWARGS) - _TORCH_LOADING_KWARGS)
    if unknown:
        raise TypeError(
            f"MGCMOnnxForTokenClassification.from_pretrained got unexpected keyword arguments {unknown}; it takes "
            f"{', '.join(ONNX_OPTIONS)}, config, dtype and the Hub options {', '.join(HUB_KWARGS)}"
        )
    return {name: kwargs[name] for name in HUB_KWARGS if name in kwargs}


def _session_options(ort: Any, session_options: Any) -> Any:
    if session_options is None or isinstance(session_options, ort.SessionOptions):
        return session_options
    if not isinstance(session_options, dict):
        raise TypeError(
            f"session_options must be an onnxruntime.SessionOptions or a dict of its attributes, got "
            f"{type(session_options).__name__}"
        )
    options = ort.SessionOptions()
    for name, value in session_options.items():
        if name.startswith("_") or not hasattr(options, name):
            raise ValueError(
                f"session_options: onnxruntime.SessionOptions has no attribute {name!r} (e.g. "
                "intra_op_num_threads, inter_op_num_threads, execution_mode, graph_optimization_level)"
            )
        setattr(options, name, value)
    return options


def _checked_providers(ort: Any, providers: list | None) -> list:
    if providers is None:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    names = [provider[0] if isinstance(provider, tuple) else provider for provider in providers]
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"ONNX Runtime execution providers {missing} are not available here (available: {available}); the "
            "GPU ones need the onnxruntime-gpu package"
        )
    return list(providers)


class _FileResolver:
    """Finds the ONNX files of a model (its folder's, else the cache's, exported there first) and checks that
    they were exported from the weights and config it holds."""

    def __init__(self, source: str, hub_kwargs: dict[str, Any], config_digest: str) -> None:
        self.source = source
        self.hub_kwargs = hub_kwargs
        self.config_digest = config_digest
        self.weights = self._current_weights()
        self.hint = EXPORT_HINT.format(folder=source)

    def _current_weights(self) -> dict[str, str] | None:
        """sha256 of the weight files on this machine, None where there are none or they cannot be read."""
        folder = Path(self.source) / self.hub_kwargs.get("subfolder", "")
        if folder.is_dir():
            files = weight_files(folder)
        else:
            cached = _cached_hub_file(self.source, "model.safetensors", self.hub_kwargs)
            files = [Path(cached)] if cached is not None else []
        if not files:
            return None
        try:
            return weights_sha256(files)
        except OSError as error:
            logger.warning("cannot read %s to check the ONNX files against it (%s)", files[0], error)
            return None

    def _folder_file(self, name: str) -> Path | None:
        found = cached_file(
            self.source,
            f"{ONNX_SUBFOLDER}/{name}",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **self.hub_kwargs,
        )
        return Path(found) if found is not None else None

    def resolve(
        self, config: MGCMConfig, int8: bool, cache_dir: str | os.PathLike | None
    ) -> tuple[Path, Path | None]:
        """(main graph, vision graph or None) to load: the folder's export, else the cache's (exported there
        first); with `int8` and no int8 file, the float graph quantised once into the cache."""
        needs_vision = config.use_image and config.vision_config is not None
        found = {name: self._folder_file(name) for name in (MODEL_FILE, QUANTIZED_FILE, VISION_FILE)}
        if found[MODEL_FILE] is not None or found[QUANTIZED_FILE] is not None:
            vision = found[VISION_FILE] if needs_vision else None
            if needs_vision and vision is None:
                raise OSError(f"{self.source}/{ONNX_SUBFOLDER} has no {VISION_FILE}: {self.hint}")
            if int8 and found[QUANTIZED_FILE] is not None:
                return found[QUANTIZED_FILE], vision
            if found[MODEL_FILE] is None:
                raise OSError(
                    f"{self.source}/{ONNX_SUBFOLDER} holds {QUANTIZED_FILE} only: pass int8=True, or {self.hint}"
                )
            return (self._quantized(found[MODEL_FILE], cache_dir) if int8 else found[MODEL_FILE]), vision
        if self.weights is None:
            raise OSError(
                f"{self.source} has no ONNX files ({ONNX_SUBFOLDER}/{MODEL_FILE}) and no model.safetensors to "
                f"export them from: {self.hint}"
            )
        cache = self._cache_dir(cache_dir, self.weights)
        if not (cache / MODEL_FILE).is_file() or (needs_vision and not (cache / VISION_FILE).is_file()):
            self._export_into(cache, config)
        vision = cache / VISION_FILE if needs_vision else None
        return (self._quantized(cache / MODEL_FILE, cache_dir) if int8 else cache / MODEL_FILE), vision

    def _quantized(self, model_path: Path, cache_dir: str | os.PathLike | None) -> Path:
        """The int8 graph of a fresh float graph that has none beside it, quantised once into the cache."""
        from .onnx_export import quantize_onnx

        metadata = _file_metadata(model_path)
        self.check_fresh(model_path, metadata)
        weights = self.weights or json.loads(metadata[MetadataKey.WEIGHTS])
        target = self._cache_dir(cache_dir, weights) / QUANTIZED_FILE
        if not target.is_file():
            logger.warning(
                "%s has no %s: quantising %s once into %s", self.source, QUANTIZED_FILE, model_path, target
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            quantize_onnx(model_path, target)
        return target

    def _cache_dir(self, cache_dir: str | os.PathLike | None, weights: dict[str, str]) -> Path:
        """The cache entry of these weights and this config: `<cache_dir>/<fingerprint>/onnx`."""
        key = config_sha256({"weights": weights, "config": self.config_digest})[:24]
        return Path(cache_dir or default_cache_dir()) / key / ONNX_SUBFOLDER

    def _export_into(self, cache: Path, config: MGCMConfig) -> None:
        from .modeling_mgcm import MGCMForTokenClassification
        from .onnx_export import processor_image_size, write_onnx_files

        logger.warning(
            "%s has no ONNX files: exporting it once into %s (about a minute for a small model); "
            "`mgcm-export-onnx %s` writes them into the folder instead",
            self.source,
            cache,
            self.source,
        )
        model = MGCMForTokenClassification.from_pretrained(
            self.source, config=config, dtype=torch.float32, **self.hub_kwargs
        )
        # Downloaded just now for a Hub model.
        self.weights = self._current_weights() or self.weights
        processor_config = cached_file(
            self.source,
            "processor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **self.hub_kwargs,
        )
        image_size = processor_image_size(processor_config)
        write_onnx_files(model, cache, self.weights, self.config_digest, image_size=image_size)

    def check_fresh(self, path: Path, metadata: dict[str, str]) -> None:
        """Raise `StaleOnnxError` unless the file at `path` was exported from this folder's weights and config."""
        if metadata.get(MetadataKey.FORMAT) != FORMAT_VERSION:
            raise StaleOnnxError(
                f"{path} is not an MGCM ONNX export of format {FORMAT_VERSION} (metadata "
                f"{MetadataKey.FORMAT}={metadata.get(MetadataKey.FORMAT)!r}): {self.hint}"
            )
        recorded = json.loads(metadata[MetadataKey.WEIGHTS])
        if self.weights is not None and recorded != self.weights:
            changed = sorted(
                set(recorded) ^ set(self.weights)
                | {name for name in set(recorded) & set(self.weights) if recorded[name] != self.weights[name]}
            )
            details = ", ".join(
                f"{name} sha256 {recorded.get(name, 'absent')[:12]} at export, {self.weights.get(name, 'absent')[:12]} now"
                for name in changed
            )
            raise StaleOnnxError(
                f"{path} was exported from other weights than {self.source} holds now ({details}): {self.hint}"
            )
        if metadata.get(MetadataKey.CONFIG) != self.config_digest:
            raise StaleOnnxError(
                f"{path} was exported with another config.json than {self.source}'s (the architecture, labels or "
                f"inputs changed since): {self.hint}"
            )


def check_onnx_file(path: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Raise `StaleOnnxError` unless the ONNX file at `path` was exported from the weights and config of the
    local model folder `folder` (its weights are checked where the folder has them)."""
    folder = Path(folder)
    files = _FileResolver(str(folder), {}, config_sha256(folder / "config.json"))
    files.check_fresh(Path(path), _file_metadata(Path(path)))


def _file_metadata(path: Path) -> dict[str, str]:
    onnx = import_onnx_package("onnx")
    return {prop.key: prop.value for prop in onnx.load(path, load_external_data=False).metadata_props}


def _cached_hub_file(repo_id: str, filename: str, hub_kwargs: dict[str, Any]) -> str | None:
    """The path of a Hub file already in the local cache, without downloading it."""
    from huggingface_hub import try_to_load_from_cache

    subfolder = hub_kwargs.get("subfolder")
    try:
        found = try_to_load_from_cache(
            repo_id,
            f"{subfolder}/{filename}" if subfolder else filename,
            cache_dir=hub_kwargs.get("cache_dir"),
            revision=hub_kwargs.get("revision"),
        )
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


__all__ = [
    "HUB_KWARGS",
    "MGCMOnnxForTokenClassification",
    "ONNX_OPTIONS",
    "StaleOnnxError",
    "check_onnx_file",
    "default_cache_dir",
]
