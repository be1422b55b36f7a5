"""`ImageFeatureCache`: region features of a frozen vision backbone, computed once per image and kept on disk.

The vision backbone is frozen, so its output for an image never changes: running it every epoch (as the
MGCM release did) is wasted work. `build` runs it once per unique IMGID; `get` then serves the features to
the data collator for every epoch and every later run.

Layout of `cache_dir/<sanitised backbone_name>/`:

- `shard-00000.safetensors`, ...: up to `shard_size` images each; a tensor per image, named by its IMGID,
  of shape `(R, D)` (regions x feature width) in `storage_dtype`.
- `index.json`: the backbone name, the feature shape `[R, D]`, each shard's file name, sha256 and IMGIDs,
  and the IMGIDs whose image was missing or corrupt (`unusable`, with the reason).

Files are written to a temporary name and moved into place with `os.replace`, shard first and index last,
so an interrupted build leaves a valid cache of the shards finished so far. When a cache is opened every
shard is checked against the index (sha256, safetensors header, IMGIDs, shapes); a shard that fails is
deleted and its images are recomputed by the next `build`.

One process should build a cache at a time (under `accelerate`, build inside `main_process_first()`).
Features are keyed by IMGID only: use one `cache_dir` per corpus, and a `backbone_name` that names both the
weights and the image processor settings.
"""

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from modeling_mgcm.atomic_files import atomic_write_path, write_text_atomically
from modeling_mgcm.image_loading import MISSING, ImageLoadError, load_image
from modeling_mgcm.vision_features import extract_image_features
from processing.images.corpus_images import unique_image_entries, warn_unusable_images

logger = logging.getLogger(__name__)

INDEX_FILE_NAME = "index.json"
INDEX_FORMAT_VERSION = 1
SHARD_FILE_PATTERN = re.compile(r"shard-(\d+)\.safetensors")
# safetensors reserves this tensor name for the file's metadata.
RESERVED_TENSOR_NAME = "__metadata__"
_MAX_DIRECTORY_NAME = 100


@dataclass
class ImageCacheStats:
    """What one `ImageFeatureCache.build` did, per unique IMGID.

    Attributes:
        backbone_name: the cache's backbone name.
        computed_ids: images run through the backbone by this build.
        reused_ids: images whose features were already cached.
        missing_ids: tweets without an image, or whose image file does not exist.
        corrupt_ids: image files that exist but cannot be decoded (not an image, truncated, too large...).
        problems: IMGID -> why its image is missing or corrupt.
        vision_forward_calls: backbone forward passes (batches) run by this build.
    """

    backbone_name: str = ""
    computed_ids: list[str] = field(default_factory=list)
    reused_ids: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    corrupt_ids: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    vision_forward_calls: int = 0

    @property
    def num_images(self) -> int:
        """Unique IMGIDs seen by the build."""
        return len(self.computed_ids) + len(self.reused_ids) + len(self.missing_ids) + len(self.corrupt_ids)

    def to_dict(self) -> dict[str, Any]:
        """Counts and id lists, JSON-ready for a run's `results.json`."""
        return {
            "backbone_name": self.backbone_name,
            "images": self.num_images,
            "computed": len(self.computed_ids),
            "reused": len(self.reused_ids),
            "missing": len(self.missing_ids),
            "corrupt": len(self.corrupt_ids),
            "vision_forward_calls": self.vision_forward_calls,
            "missing_ids": list(self.missing_ids),
            "corrupt_ids": list(self.corrupt_ids),
            "problems": dict(self.problems),
        }


def sanitise_backbone_name(backbone_name: str) -> str:
    """A folder name for `backbone_name`: "microsoft/resnet-152" -> "microsoft--resnet-152".

    Characters other than letters, digits, ".", "_" and "-" become "_"; a long name is shortened and given
    a hash suffix. The cache's index keeps the original name, so two names that map to the same folder are
    caught when the cache is opened.
    """
    if not isinstance(backbone_name, str) or not backbone_name.strip():
        raise ValueError(f"backbone_name must be a non-empty string; got {backbone_name!r}")
    name = backbone_name.strip()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "--"))
    if not safe.strip("."):
        raise ValueError(f"backbone_name {backbone_name!r} cannot name a folder")
    if len(safe) > _MAX_DIRECTORY_NAME:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
        safe = f"{safe[: _MAX_DIRECTORY_NAME - 13]}-{digest}"
    return safe


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class ImageFeatureCache:
    """Frozen-backbone region features per IMGID, built once and read every epoch.

    Args:
        cache_dir: folder that holds one sub-folder per backbone.
        vision_model: the frozen vision backbone (`AutoModel`: ResNet, ConvNeXt, ViT, CLIP vision...). May be
            None for a read-only cache; `build` then fails if any image still needs features.
        image_processor: the backbone's image processor (turns PIL images into `pixel_values`).
        backbone_name: names the weights and preprocessing, e.g. "microsoft/resnet-152"; it keys the cache.
        batch_size: images per backbone forward pass.
        shard_size: images per safetensors shard.
        storage_dtype: dtype on disk; float16 halves the size, and `get` always returns float32.
        show_progress: show a tqdm bar while building.

    Attributes:
        stats: `ImageCacheStats` of the last `build`.
        vision_forward_calls: backbone forward passes run by this object so far.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        vision_model: torch.nn.Module | None,
        image_processor: Any,
        backbone_name: str,
        batch_size: int = 32,
        shard_size: int = 512,
        storage_dtype: torch.dtype = torch.float16,
        show_progress: bool = True,
    ):
        if batch_size < 1 or shard_size < 1:
            raise ValueError(f"batch_size and shard_size must be >= 1; got {batch_size} and {shard_size}")
        if storage_dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"storage_dtype must be float16, bfloat16 or float32; got {storage_dtype}")
        self.backbone_name = backbone_name
        self.directory = Path(cache_dir) / sanitise_backbone_name(backbone_name)
        self.vision_model = vision_model
        self.image_processor = image_processor
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.storage_dtype = storage_dtype
        self.show_progress = show_progress
        self.vision_forward_calls = 0
        self.stats = ImageCacheStats(backbone_name=backbone_name)
        self._readers: dict[str, Any] = {}
        # Shards this object has hashed, by (file, sha256, size, mtime): re-reading the index skips them.
        self._verified_shards: set[tuple[str, str, int, int]] = set()
        self._load_index()

    # ------------------------------------------------------------------ index and verification

    @property
    def index_path(self) -> Path:
        """`<cache_dir>/<sanitised backbone_name>/index.json`."""
        return self.directory / INDEX_FILE_NAME

    @property
    def feature_shape(self) -> tuple[int, int] | None:
        """`(R, D)` of every cached image, None until the first image has been computed."""
        return None if self._feature_shape is None else tuple(self._feature_shape)

    def _reset_index(self) -> None:
        self._feature_shape: list[int] | None = None
        self._shards: dict[str, dict[str, Any]] = {}
        self._location: dict[str, str] = {}
        self._unusable: dict[str, dict[str, str]] = {}

    def _load_index(self) -> None:
        """Reads `index.json` and keeps only the shards that pass verification."""
        self._readers = {}
        self._reset_index()
        self._index_text_on_disk: str | None = None
        if not self.index_path.is_file():
            return
        try:
            self._index_text_on_disk = self.index_path.read_text(encoding="utf-8")
            index = json.loads(self._index_text_on_disk)
            stored_name = index["backbone_name"]
            version = index["format_version"]
            shards = index["shards"]
            unusable = index["unusable"]
            feature_shape = index["feature_shape"]
            if not isinstance(shards, list) or not isinstance(unusable, dict):
                raise TypeError("shards must be a list and unusable an object")
            if feature_shape is not None and (
                not isinstance(feature_shape, list)
                or not all(isinstance(size, int) for size in feature_shape)
            ):
                raise TypeError(f"feature_shape {feature_shape!r} is not a list of sizes")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            logger.warning("%s is unreadable (%s); its images will be recomputed", self.index_path, error)
            return
        if stored_name != self.backbone_name:
            raise ValueError(
                f"{self.index_path} belongs to backbone {stored_name!r}, not {self.backbone_name!r} (both map "
                f"to the folder {self.directory.name!r}); choose another backbone_name or cache_dir"
            )
        if version != INDEX_FORMAT_VERSION:
            logger.warning(
                "%s has format version %r, expected %d; its images will be recomputed",
                self.index_path,
                version,
                INDEX_FORMAT_VERSION,
            )
            return
        self._feature_shape = feature_shape
        self._unusable = {str(key): value for key, value in unusable.items() if isinstance(value, dict)}
        for shard in shards:
            problem = self._verify_shard(shard)
            if problem is not None:
                logger.warning(
                    "cached image features %s fail verification (%s); its images will be recomputed",
                    self.directory / str(shard.get("file") if isinstance(shard, dict) else shard),
                    problem,
                )
                self._discard_shard_file(shard)
                continue
            self._shards[shard["file"]] = shard
            for image_id in shard["ids"]:
                self._location[image_id] = shard["file"]
                self._unusable.pop(image_id, None)

    def _verify_shard(self, shard: Any) -> str | None:
        """None if the shard file matches its index entry, else what is wrong with it."""
        if (
            not isinstance(shard, dict)
            or not SHARD_FILE_PATTERN.fullmatch(str(shard.get("file")))
            or not isinstance(shard.get("ids"), list)
            or not all(isinstance(image_id, str) for image_id in shard["ids"])
        ):
            return f"malformed index entry {str(shard)[:200]}"
        path = self.directory / shard["file"]
        if not path.is_file():
            return "the file is missing"
        file_status = path.stat()
        fingerprint = (shard["file"], shard.get("sha256"), file_status.st_size, file_status.st_mtime_ns)
        if fingerprint in self._verified_shards:
            return None
        if _file_sha256(path) != shard.get("sha256"):
            return "sha256 differs from the index"
        try:
            with safe_open(path, framework="pt") as reader:
                names = set(reader.keys())
                shapes = {list(reader.get_slice(name).get_shape()) == self._feature_shape for name in names}
                dtypes = {reader.get_slice(name).get_dtype() for name in names}
        except (SafetensorError, OSError) as error:
            return f"unreadable safetensors file: {error}"
        if names != set(shard["ids"]):
            return "its tensor names differ from the IMGIDs in the index"
        if shapes - {True}:
            return f"a tensor's shape differs from the index's feature shape {self._feature_shape}"
        if dtypes - {"F16", "BF16", "F32"}:
            return f"unexpected dtypes {sorted(dtypes)}"
        self._verified_shards.add(fingerprint)
        return None

    def _discard_shard_file(self, shard: Any) -> None:
        name = shard.get("file") if isinstance(shard, dict) else None
        if isinstance(name, str) and SHARD_FILE_PATTERN.fullmatch(name):
            (self.directory / name).unlink(missing_ok=True)

    def _index_content(self) -> str:
        index = {
            "format_version": INDEX_FORMAT_VERSION,
            "backbone_name": self.backbone_name,
            "feature_shape": self._feature_shape,
            "shards": list(self._shards.values()),
            "unusable": self._unusable,
        }
        return json.dumps(index, indent=1) + "\n"

    def _write_index(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = self._index_content()
        write_text_atomically(self.index_path, text)
        self._index_text_on_disk = text

    def _next_shard_file_name(self) -> str:
        on_disk = [path.name for path in self.directory.glob("shard-*.safetensors")]
        numbers = [
            int(match.group(1))
            for name in [*self._shards, *on_disk]
            if (match := SHARD_FILE_PATTERN.fullmatch(name))
        ]
        return f"shard-{max(numbers, default=-1) + 1:05d}.safetensors"

    def _write_shard(self, features: dict[str, torch.Tensor]) -> None:
        """Writes one shard atomically, then the index that lists it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        file_name = self._next_shard_file_name()
        path = self.directory / file_name
        with atomic_write_path(path) as temporary:
            save_file(features, temporary, metadata={"backbone_name": self.backbone_name})
            sha256 = _file_sha256(temporary)
        file_status = path.stat()
        self._verified_shards.add((file_name, sha256, file_status.st_size, file_status.st_mtime_ns))
        self._shards[file_name] = {"file": file_name, "sha256": sha256, "ids": list(features)}
        for image_id in features:
            self._location[image_id] = file_name
            self._unusable.pop(image_id, None)
        self._write_index()

    # ------------------------------------------------------------------ building

    def build(self, dataset: Dataset | DatasetDict) -> ImageCacheStats:
        """Computes features for every unique IMGID of the dataset (all splits) that is not cached yet.

        Images are decoded with `load_image`; a missing or corrupt image is recorded (its features are then
        zeros with mask 0) and retried by the next build, in case the file has been fixed.

        Args:
            dataset: corpus rows with `id` and `image` (`datasets.Image()`) columns.

        Returns:
            The build's `ImageCacheStats` (also kept in `self.stats`).
        """
        # Another process (or cache object) may have added shards since this one read the index.
        self._load_index()
        stats = ImageCacheStats(backbone_name=self.backbone_name)
        calls_before = self.vision_forward_calls
        pending_images, stats.reused_ids = unique_image_entries(dataset, self._location)
        reserved = [image_id for image_id, _ in pending_images if image_id == RESERVED_TENSOR_NAME]
        if reserved:
            raise ValueError(
                f"IMGID {RESERVED_TENSOR_NAME!r} is reserved by safetensors and cannot be cached"
            )
        if pending_images:
            self._compute(pending_images, stats)
        if self._feature_shape is None and stats.num_images and self.vision_model is not None:
            # No image decoded at all: `get` still owes zero features of the backbone's shape.
            self._compute_feature_shape()
        stats.vision_forward_calls = self.vision_forward_calls - calls_before
        if self._index_content() != self._index_text_on_disk:
            # Unchanged caches are not rewritten: a finished cache may live on a read-only disk.
            self._write_index()
        self.stats = stats
        self._log_stats(stats)
        return stats

    def _compute(self, pending_images: list[tuple[str, Any]], stats: ImageCacheStats) -> None:
        model = self.vision_model
        was_training = model is not None and model.training
        if model is not None:
            model.eval()
        shard: dict[str, torch.Tensor] = {}
        batch_ids: list[str] = []
        batch_images: list[Image.Image] = []
        progress = tqdm(
            total=len(pending_images),
            desc=f"image features ({self.backbone_name})",
            unit="image",
            disable=not self.show_progress,
        )
        try:
            for image_id, entry in pending_images:
                try:
                    if entry is None:
                        raise ImageLoadError("no image file", MISSING, "the row's image is None")
                    batch_images.append(load_image(entry))
                    batch_ids.append(image_id)
                except ImageLoadError as error:
                    self._record_unusable(image_id, error, stats)
                    progress.update(1)
                if len(batch_ids) == self.batch_size:
                    self._store_batch(batch_ids, batch_images, shard, stats)
                    progress.update(len(batch_ids))
                    batch_ids, batch_images = [], []
            if batch_ids:
                self._store_batch(batch_ids, batch_images, shard, stats)
                progress.update(len(batch_ids))
            if shard:
                self._write_shard(shard)
        finally:
            progress.close()
            if model is not None:
                model.train(was_training)

    def _record_unusable(self, image_id: str, error: ImageLoadError, stats: ImageCacheStats) -> None:
        (stats.missing_ids if error.is_missing else stats.corrupt_ids).append(image_id)
        stats.problems[image_id] = f"IMGID {image_id}: {error}"
        self._unusable[image_id] = {"reason": error.reason, "message": stats.problems[image_id]}

    def _forward(self, images: list[Image.Image]) -> torch.Tensor:
        """`(n, R, D)` features of decoded images, on the CPU in float32."""
        model = self.vision_model
        if model is None or self.image_processor is None:
            raise ValueError(
                f"images have no cached features in {self.directory}, and this cache has no vision_model and "
                "image_processor to compute them"
            )
        parameter = next(model.parameters())
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            features = extract_image_features(model, pixel_values)
        self.vision_forward_calls += 1
        return features.detach().float().cpu().contiguous()

    def _store_batch(
        self,
        batch_ids: list[str],
        batch_images: list[Image.Image],
        shard: dict[str, torch.Tensor],
        stats: ImageCacheStats,
    ) -> None:
        """Adds a batch's features to the open shard, writing the shard out whenever it is full."""
        features = self._forward(batch_images)
        self._check_feature_shape(features, batch_ids)
        stored = features.to(self.storage_dtype)
        broken = [
            image_id
            for image_id, original, kept in zip(batch_ids, features, stored, strict=True)
            if not torch.isfinite(kept).all() or not torch.isfinite(original).all()
        ]
        if broken:
            raise ValueError(
                f"the features of IMGIDs {broken[:5]} are not finite in {self.storage_dtype} (largest magnitude "
                f"{features.abs().max().item():.4g}); pass storage_dtype=torch.float32 or check the backbone"
            )
        for image_id, image_features in zip(batch_ids, stored, strict=True):
            shard[image_id] = image_features.clone()
            stats.computed_ids.append(image_id)
            if len(shard) == self.shard_size:
                self._write_shard(dict(shard))
                shard.clear()

    def _check_feature_shape(self, features: torch.Tensor, batch_ids: list[str]) -> None:
        shape = list(features.shape[1:])
        if self._feature_shape is None:
            self._feature_shape = shape
        elif shape != self._feature_shape:
            raise ValueError(
                f"the backbone gave features of shape {shape} for IMGID {batch_ids[0]!r}, but {self.index_path} "
                f"holds features of shape {self._feature_shape}: the backbone or its image processor changed; "
                "use another backbone_name or delete the folder"
            )

    def _compute_feature_shape(self) -> None:
        was_training = self.vision_model.training
        self.vision_model.eval()
        try:
            self._check_feature_shape(self._forward([Image.new("RGB", (224, 224))]), ["<blank image>"])
        finally:
            self.vision_model.train(was_training)

    def _log_stats(self, stats: ImageCacheStats) -> None:
        logger.info(
            "image features (%s): %d images, %d computed in %d forward passes, %d reused, %d missing, %d corrupt",
            self.backbone_name,
            stats.num_images,
            len(stats.computed_ids),
            stats.vision_forward_calls,
            len(stats.reused_ids),
            len(stats.missing_ids),
            len(stats.corrupt_ids),
        )
        warn_unusable_images(
            logger, stats.missing_ids, stats.corrupt_ids, stats.problems, "are masked (image_mask 0)"
        )

    # ------------------------------------------------------------------ reading

    def _reader(self, file_name: str) -> Any:
        if file_name not in self._readers:
            self._readers[file_name] = safe_open(self.directory / file_name, framework="pt")
        return self._readers[file_name]

    def get(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached features of the given IMGIDs.

        Args:
            ids: IMGIDs, each seen by a `build` of this cache (by this object or any earlier one).

        Returns:
            `features` `(n, R, D)` float32 (zeros for an image that is missing or corrupt) and `image_mask`
            `(n,)` long (1 where the features are real).

        Raises:
            KeyError: an IMGID that no build has seen; run `build` on the dataset first.
        """
        ids = list(ids)
        if any(image_id not in self._location and image_id not in self._unusable for image_id in ids):
            # Another cache object (or process) may have built these since this one read the index.
            self._load_index()
        unknown = [
            image_id for image_id in ids if image_id not in self._location and image_id not in self._unusable
        ]
        if unknown:
            raise KeyError(
                f"{len(unknown)} IMGIDs, e.g. {unknown[:5]}, are not in the image feature cache "
                f"{self.directory}; run build() on their dataset first"
            )
        if self._feature_shape is None:
            raise KeyError(f"the image feature cache {self.directory} has no features yet; run build() first")
        features = torch.zeros((len(ids), *self._feature_shape), dtype=torch.float32)
        image_mask = torch.zeros(len(ids), dtype=torch.long)
        for position, image_id in enumerate(ids):
            file_name = self._location.get(image_id)
            if file_name is not None:
                features[position] = self._reader(file_name).get_tensor(image_id).float()
                image_mask[position] = 1
        return features, image_mask

    def __getstate__(self) -> dict[str, Any]:
        # Open safetensors readers cannot be pickled (DataLoader workers under "spawn"); they reopen lazily.
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state


__all__ = ["ImageCacheStats", "ImageFeatureCache", "sanitise_backbone_name"]
