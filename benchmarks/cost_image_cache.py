"""The one-off saving of `ImageFeatureCache` (issue 6): seconds to get every image's region features for a few
epochs without the cache (decode, preprocess and backbone forward every epoch) and with it (one `build`, then
reads), on synthetic PNG images and a tiny random ResNet."""

import time
from pathlib import Path

import datasets
import torch
from cost_configs import IMAGE_SIZE, MODEL_SEED, SHUFFLE_SEED
from transformers import ResNetModel

from modeling_mgcm.vision_features import extract_image_features
from processing import ImageFeatureCache, load_image, make_synthetic_corpus
from processing.testing.tiny_backbones import (
    tiny_image_processor,
    tiny_vision_config,
    weights_fingerprint,
)


def measure_image_feature_cache(num_images: int, epochs: int, batch_size: int, work_dir: Path) -> dict:
    """Seconds to get every image's features for `epochs` epochs, without and with `ImageFeatureCache`."""
    started = time.perf_counter()
    images = make_synthetic_corpus(
        num_images, 0, 0, seed=SHUFFLE_SEED, image_size=IMAGE_SIZE, missing_image_fraction=0.0
    )["train"].select_columns(["id", "image"])
    generation_seconds = time.perf_counter() - started
    undecoded = images.cast_column("image", datasets.Image(decode=False))
    torch.manual_seed(MODEL_SEED)
    vision_model = ResNetModel(tiny_vision_config()).eval()
    image_processor = tiny_image_processor(IMAGE_SIZE)
    parameter = next(vision_model.parameters())
    starts = range(0, num_images, batch_size)

    def uncached_features(start: int) -> torch.Tensor:
        rows = undecoded[start : start + batch_size]
        pixels = image_processor(images=[load_image(entry) for entry in rows["image"]], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            return extract_image_features(vision_model, pixel_values)

    started = time.perf_counter()
    for _ in range(epochs):
        for start in starts:
            uncached_features(start)
    without_cache = time.perf_counter() - started

    cache = ImageFeatureCache(
        work_dir / "image_features",
        vision_model,
        image_processor,
        backbone_name=f"tiny-random-resnet-{weights_fingerprint(vision_model)}",
        show_progress=False,
    )
    started = time.perf_counter()
    stats = cache.build(images)
    build_seconds = time.perf_counter() - started
    ids = images["id"]
    started = time.perf_counter()
    for _ in range(epochs):
        for start in starts:
            cache.get(ids[start : start + batch_size])
    read_seconds = time.perf_counter() - started
    if len(stats.computed_ids) != num_images:
        raise RuntimeError(
            f"the cache computed {len(stats.computed_ids)} of {num_images} images: {stats.problems}"
        )
    # The cache must serve what the backbone computes (float16 on disk): a cache that saved time by serving
    # something else would be no saving.
    cached, _ = cache.get(ids[:batch_size])
    computed = uncached_features(0).float().cpu()
    if not torch.allclose(cached, computed, rtol=1e-2, atol=1e-2):
        raise RuntimeError(
            f"cached features differ from computed ones by up to {(cached - computed).abs().max().item():.3g}"
        )
    with_cache = build_seconds + read_seconds
    return {
        "images": num_images,
        "image_size": IMAGE_SIZE,
        "image_format": "PNG (processing.make_synthetic_corpus)",
        "generation_seconds": generation_seconds,
        "vision_backbone": "tiny random ResNet (processing.testing.tiny_backbones.tiny_vision_config)",
        "feature_shape": list(cache.feature_shape),
        "storage_dtype": str(cache.storage_dtype).removeprefix("torch."),
        "epochs": epochs,
        "batch_size": batch_size,
        "without_cache_seconds": without_cache,
        "with_cache_seconds": with_cache,
        "with_cache_build_seconds": build_seconds,
        "with_cache_read_seconds": read_seconds,
        "saving_seconds": without_cache - with_cache,
        "ratio_without_to_with": without_cache / with_cache,
        "cache_bytes": sum(path.stat().st_size for path in cache.directory.rglob("*") if path.is_file()),
    }


__all__ = ["measure_image_feature_cache"]
