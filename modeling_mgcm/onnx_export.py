"""ONNX export of an MGCM token classifier: the text encoder and the MGCM layers up to the main head's emissions,
the vision backbone as a second graph, and optional dynamic int8 quantisation.

An exported folder's `onnx/` holds
- `model.onnx`: the processor's padded inputs (every input of every granularity the config uses; an absent
  input is an all-zero mask) -> `logits` (B, W, L) and `gate_values` (B, W, G), G = `config.granularities`;
- `vision_model.onnx`, when the config has a vision backbone: `pixel_values` (B, 3, H, W) -> `image_features`
  (B, R, D_v), so that posts with raw images run without torch weights too;
- `model_quantized.onnx` with `int8=True`: `model.onnx` with int8 weights (`quantize_dynamic`).

The CRF stays in torch (`ConditionalRandomField.decode` / `marginals` on the emissions). Its parameters and the
export's fingerprint are stored in each file's ONNX metadata (`metadata_props`): they cannot get separated from
the graph they belong to, and ONNX Runtime reads them with the session at no cost. The fingerprint is the
sha256 of the weight files (`model.safetensors`, the Hub's LFS id of that file) and of `config.json` without
its bookkeeping keys, so that files exported from other weights are refused (`onnx_model`).

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), not the TorchScript tracer (deprecated
since torch 2.9). torch.export refuses to specialise a dynamic axis to the example's size (it caught the Viterbi
loop fixing the word count), where a tracer silently records one batch's shapes. Its cost is time: about a minute
for a tiny model on a loaded 2-core machine.

Shapes: B = batch, T = word pieces, W = words, k = neighbours, R = image regions, O = objects, C = pieces of a
text source, L = labels, G = granularities.
"""

import hashlib
import importlib
import inspect
import json
import logging
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .atomic_files import replace_directory
from .host_reads import no_host_reads
from .vision_features import extract_image_features

logger = logging.getLogger(__name__)

ONNX_SUBFOLDER = "onnx"
MODEL_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
VISION_FILE = "vision_model.onnx"
# opset 18: the first with ScatterElements' "min" reduction (`first_piece_positions`).
OPSET = 18
FORMAT_VERSION = "1"
# Weight files a model folder may hold (one file, or shards and their index).
WEIGHT_FILE_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
# config.json keys that loading, saving or the Hub export add or change without changing the graph.
_BOOKKEEPING_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "_name_or_path",
        "auto_map",
        "custom_pipelines",
        "architectures",
        "dtype",
        "torch_dtype",
    }
)
EXTRA_HINT = "install the onnx extra: pip install 'mgcm[onnx]' (onnxruntime, onnx, onnxscript)"
EXPORT_HINT = (
    "re-export it: `mgcm-export-onnx {folder}` (add --int8 for the int8 file), or "
    "`MGCMForTokenClassification.from_pretrained(folder).export_to_onnx(folder)`"
)


class MetadataKey:
    """The `metadata_props` keys of an exported file."""

    FORMAT = "mgcm_format"
    WEIGHTS = "mgcm_weights_sha256"
    CONFIG = "mgcm_config_sha256"
    GRANULARITIES = "mgcm_granularities"
    CRF = "mgcm_crf"
    EXPORTER = "mgcm_exporter"
    QUANTIZATION = "mgcm_quantization"


def import_onnx_package(name: str) -> Any:
    """`importlib.import_module(name)`, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"MGCM's ONNX support needs {name.split('.')[0]}: {EXTRA_HINT}") from error


# ------------------------------------------------------------------------------------------------------
# Fingerprints


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (for a safetensors file: the Hub's LFS object id)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors weight files of a local model folder (one file, or the shards and their index)."""
    folder = Path(folder)
    return sorted({path for pattern in WEIGHT_FILE_PATTERNS for path in folder.glob(pattern)})


def weights_sha256(files: Iterable[str | Path]) -> dict[str, str]:
    """File name -> sha256 of each weight file (reading the bytes, never loading a tensor)."""
    return {Path(path).name: file_sha256(path) for path in files}


def _without_bookkeeping(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _without_bookkeeping(item)
            for key, item in value.items()
            if key not in _BOOKKEEPING_CONFIG_KEYS
        }
    return value


def config_sha256(config: str | Path | dict) -> str:
    """sha256 of a `config.json` (a path or its dict) without the keys that loading, saving and the Hub
    export change (`transformers_version`, `auto_map`, `custom_pipelines`, `dtype`, ...), keys sorted."""
    if not isinstance(config, dict):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    text = json.dumps(_without_bookkeeping(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_fingerprint(folder: str | Path) -> tuple[dict[str, str], str]:
    """(weights sha256 per file, config sha256) of a local model folder, as the export records them."""
    folder = Path(folder)
    files = weight_files(folder)
    if not files:
        raise OSError(f"{folder} holds no model.safetensors: save the model there first (save_pretrained)")
    return weights_sha256(files), config_sha256(folder / "config.json")


# ------------------------------------------------------------------------------------------------------
# The graphs


def graph_input_names(model: nn.Module) -> list[str]:
    """The inputs of `model.onnx`, in order: the text inputs, then each granularity's of the config."""
    config = model.config
    names = ["input_ids", "attention_mask"]
    # Only encoders whose forward takes token types get them (DistilBERT's does not).
    if "token_type_ids" in _forward_parameters(model.mgcm.text_encoder):
        names.append("token_type_ids")
    names += ["word_ids", "word_mask"]
    if config.use_word_shape:
        names.append("word_shape_ids")
    if config.augmentation_mode != "none":
        names += ["neighbour_vectors", "neighbour_weights"]
    if config.use_image:
        names += ["image_features", "image_mask"]
    if config.use_objects:
        names += ["object_ids", "object_mask"]
    for name in config.text_sources:
        names += [f"{name}_input_ids", f"{name}_attention_mask"]
    return names


def _forward_parameters(module: nn.Module) -> set[str]:
    return set(inspect.signature(module.forward).parameters)


class _EmissionsGraph(nn.Module):
    """What `model.onnx` computes: `MGCMModel` and the main head's classifier (no CRF, no span head: inference
    reads the main emissions only), the inputs positional in `input_names` order."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """The `input_names` tensors -> logits (B, W, L) and, with granularities, gate values (B, W, G)."""
        encoded = self.model.mgcm(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True)
        logits = self.model.classifier(encoded.last_hidden_state)
        granularities = self.model.config.granularities
        if not granularities:
            return (logits,)
        return logits, torch.stack([encoded.gate_values[name] for name in granularities], dim=-1)


class _VisionGraph(nn.Module):
    """What `vision_model.onnx` computes: `extract_image_features` of the frozen backbone."""

    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, R, D_v)."""
        return extract_image_features(self.vision_model, pixel_values)


def example_inputs(model: nn.Module) -> dict[str, Tensor]:
    """A small padded batch with every input of `graph_input_names(model)`: two rows of different lengths, the
    second without image, objects or first text source. Sizes differ from each other and from 0 and 1, which
    torch.export would take as fixed."""
    config = model.config
    batch_size, num_words, num_pieces = 2, 5, 9
    vocab_size = config.text_config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def token_ids(length: int) -> Tensor:
        return torch.randint(min(5, vocab_size - 1), vocab_size, (batch_size, length), generator=generator)

    word_ids = torch.tensor([[-1, 0, 1, 1, 2, 3, 4, -1, -1], [-1, 0, 1, 2, -1, -1, -1, -1, -1]])
    attention_mask = (word_ids >= 0).long()
    attention_mask[:, 0] = 1
    attention_mask[0, 7] = attention_mask[1, 4] = 1  # [SEP]
    word_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    inputs = {
        "input_ids": token_ids(num_pieces),
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros(batch_size, num_pieces, dtype=torch.long),
        "word_ids": word_ids,
        "word_mask": word_mask,
        "word_shape_ids": torch.randint(
            1, config.num_word_shapes, (batch_size, num_words), generator=generator
        ),
        "neighbour_vectors": torch.randn(
            batch_size, num_words, config.num_neighbours, config.augmentation_dim, generator=generator
        ),
        "neighbour_weights": torch.rand(batch_size, num_words, config.num_neighbours, generator=generator),
        "image_features": torch.rand(batch_size, 4, config.image_feature_dim or 1, generator=generator),
        "image_mask": torch.tensor([1, 0]),
        "object_ids": torch.tensor([[0, 1, len(config.object_labels)], [len(config.object_labels)] * 3]),
        "object_mask": torch.tensor([[1, 1, 0], [0, 0, 0]]),
    }
    for index, name in enumerate(config.text_sources):
        length = 6 + index
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, length - 1] = 0
        if index == 0:
            mask[1] = 0
        inputs[f"{name}_input_ids"] = token_ids(length) * mask
        inputs[f"{name}_attention_mask"] = mask
    return {name: inputs[name] for name in graph_input_names(model)}


def _dynamic_axes(name: str, tensor: Tensor) -> dict[int, Any]:
    """The axes of an input that vary between batches: all but the neighbour count k and feature widths."""
    dynamic = torch.export.Dim.DYNAMIC
    if name in ("neighbour_vectors", "neighbour_weights", "image_features"):
        return {0: dynamic, 1: dynamic}
    return {axis: dynamic for axis in range(tensor.dim())}


def export_program(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    dynamic_shapes: tuple,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> Any:
    """torch.export of `module` in eval mode without host reads -> the ONNX program, optimised by onnxscript with
    every constant folded, weights included (`fold_weight_transposes`)."""
    import_onnx_package("onnxscript")
    import_onnx_package("onnx")
    with torch.no_grad(), no_host_reads():
        # Exported first on its own so that a specialised axis raises here, instead of the ONNX exporter's
        # fallbacks quietly recording one batch's size.
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)
        program = torch.onnx.export(
            program,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    fold_weight_transposes(program.model)
    return program


def fold_weight_transposes(model: Any) -> None:
    """Fold constants of any size into `model` (an `onnx_ir.Model`), in place.

    The exporter writes each `nn.Linear` as `MatMul(x, Transpose(weight))`. With its default limits (8,192
    values), onnxscript's optimiser leaves those transposes in when the weight is larger and shared, as the
    encoder's are by its passes over the tweet and each text source: each weight was transposed at every run
    and, not an initializer of its MatMul, kept in float32 by `quantize_dynamic` (18 of the 122 MatMuls of a
    MiniLM `full` model were quantised). Folded, the weights are stored transposed once and all get int8.
    """
    optimizer = import_onnx_package("onnxscript.optimizer")
    largest = max((value.const_value.size for value in model.graph.initializers.values()), default=0)
    optimizer.optimize(model, input_size_limit=largest + 1, output_size_limit=largest + 1)


def _crf_metadata(crf: nn.Module | None) -> dict[str, str]:
    if crf is None:
        return {}
    parameters = {
        name: getattr(crf, name).detach().float().cpu().tolist()
        for name in ("start_transitions", "end_transitions", "transitions")
    }
    # float32 -> Python float -> JSON (shortest repr) -> float32 is exact.
    return {MetadataKey.CRF: json.dumps(parameters)}


def _save_program(program: Any, path: Path, metadata: dict[str, str]) -> None:
    program.model.metadata_props.update(metadata)
    program.save(str(path))


def write_onnx_files(
    model: nn.Module,
    onnx_dir: str | Path,
    weights: dict[str, str],
    config_digest: str,
    int8: bool = False,
    per_channel: bool = True,
    reduce_range: bool = False,
    image_size: tuple[int, int] | None = None,
) -> list[Path]:
    """Export `model` (an `MGCMForTokenClassification`) into `onnx_dir`, replacing what it held.

    Args:
        model: the float32 model; exported in eval mode (its mode is restored).
        onnx_dir: the folder to write (`<model folder>/onnx`), written beside and swapped in when complete.
        weights, config_digest: the fingerprint to record: `folder_fingerprint` of the folder whose weights
            `model` holds.
        int8: also write `model_quantized.onnx` (see `quantize_onnx` for `per_channel` and `reduce_range`).
        image_size: (H, W) of the images the vision backbone gets (the image processor's size); by default the
            vision config's `image_size`, else 224.

    Returns the files written.
    """
    if model.dtype != torch.float32:
        raise ValueError(f"export a float32 model (model.float()); this one is {model.dtype}")
    onnx_dir = Path(onnx_dir)
    onnx_dir.parent.mkdir(parents=True, exist_ok=True)
    building = onnx_dir.with_name(f".{onnx_dir.name}.{uuid.uuid4().hex}.tmp")
    building.mkdir()
    config = model.config
    metadata = {
        MetadataKey.FORMAT: FORMAT_VERSION,
        MetadataKey.WEIGHTS: json.dumps(weights, sort_keys=True),
        MetadataKey.CONFIG: config_digest,
        MetadataKey.GRANULARITIES: json.dumps(list(config.granularities)),
        MetadataKey.EXPORTER: f"torch {torch.__version__} torch.onnx.export(dynamo=True), opset {OPSET}",
    }
    was_training = model.training
    model.eval()
    try:
        inputs = example_inputs(model)
        names = list(inputs)
        outputs = ["logits", "gate_values"] if config.granularities else ["logits"]
        dynamic_shapes = (tuple(_dynamic_axes(name, tensor) for name, tensor in inputs.items()),)
        program = export_program(
            _EmissionsGraph(model, names), tuple(inputs.values()), dynamic_shapes, names, outputs
        )
        _save_program(program, building / MODEL_FILE, metadata | _crf_metadata(model.crf))
        vision_model = model.mgcm.vision_model
        if vision_model is not None:
            height, width = image_size or _vision_image_size(vision_model.config)
            pixel_values = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
            vision_program = export_program(
                _VisionGraph(vision_model),
                (pixel_values,),
                # Height and width stay free where the backbone allows it (a CNN); a ViT's patch grid fixes them.
                ({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},),
                ["pixel_values"],
                ["image_features"],
            )
            _save_program(vision_program, building / VISION_FILE, metadata)
        if int8:
            quantize_onnx(building / MODEL_FILE, building / QUANTIZED_FILE, per_channel, reduce_range)
        replace_directory(building, onnx_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
        model.train(was_training)
    return sorted(onnx_dir.iterdir())


def processor_image_size(processor_config: str | Path | None) -> tuple[int, int] | None:
    """(H, W) that a saved processor's image processor resizes to (`processor_config.json`'s `size`), or None."""
    if processor_config is None or not Path(processor_config).is_file():
        return None
    saved = json.loads(Path(processor_config).read_text(encoding="utf-8"))
    size = (saved.get("image_processor") or {}).get("size") or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def _vision_image_size(vision_config: Any) -> tuple[int, int]:
    size = getattr(getattr(vision_config, "vision_config", None) or vision_config, "image_size", None) or 224
    return (size, size) if isinstance(size, int) else tuple(size)


def quantize_onnx(
    source: str | Path, target: str | Path, per_channel: bool = True, reduce_range: bool = False
) -> Path:
    """`onnxruntime.quantization.quantize_dynamic` of `source` into `target`: int8 weights (QInt8) for every
    MatMul with a weight initializer, activations quantised per call; the metadata (CRF, fingerprint) is kept and
    the settings recorded.

    Args:
        per_channel: one scale per output column of each weight matrix rather than one per matrix.
        reduce_range: 7-bit weights, for x86 CPUs without VNNI where u8s8 products can saturate.
    """
    quantization = import_onnx_package("onnxruntime.quantization")
    onnx = import_onnx_package("onnx")
    source, target = Path(source), Path(target)
    quantizing = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        quantization.quantize_dynamic(
            source,
            quantizing,
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
        quantized = onnx.load(quantizing)
        settings = {"weight_type": "QInt8", "per_channel": per_channel, "reduce_range": reduce_range}
        onnx.helper.set_model_props(
            quantized,
            {prop.key: prop.value for prop in quantized.metadata_props}
            | {MetadataKey.QUANTIZATION: json.dumps(settings)},
        )
        onnx.save(quantized, target)
    finally:
        quantizing.unlink(missing_ok=True)
    return target


def export_folder(folder: str | Path, int8: bool = False, **options: Any) -> list[Path]:
    """Export the MGCM model saved in `folder` into `folder/onnx` (the weights are read, not re-saved, so the
    fingerprint is that of the folder's own files); `options` go to `write_onnx_files`."""
    from .modeling_mgcm import MGCMForTokenClassification

    folder = Path(folder)
    weights, config_digest = folder_fingerprint(folder)
    model = MGCMForTokenClassification.from_pretrained(folder, dtype=torch.float32)
    options.setdefault("image_size", processor_image_size(folder / "processor_config.json"))
    return write_onnx_files(model, folder / ONNX_SUBFOLDER, weights, config_digest, int8=int8, **options)


__all__ = [
    "EXPORT_HINT",
    "EXTRA_HINT",
    "MODEL_FILE",
    "MetadataKey",
    "ONNX_SUBFOLDER",
    "QUANTIZED_FILE",
    "VISION_FILE",
    "config_sha256",
    "example_inputs",
    "export_folder",
    "export_program",
    "file_sha256",
    "fold_weight_transposes",
    "folder_fingerprint",
    "graph_input_names",
    "import_onnx_package",
    "processor_image_size",
    "quantize_onnx",
    "weight_files",
    "weights_sha256",
    "write_onnx_files",
]
