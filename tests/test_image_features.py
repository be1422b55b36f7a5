"""Region features from vision backbones, safe image decoding, and the on-disk image feature cache."""

import io
import json
import logging
import pickle
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from tiny_corpora import image_corpus_split
from transformers import (
    AutoModel,
    CLIPConfig,
    CLIPVisionConfig,
    ConvNextConfig,
    ConvNextImageProcessor,
    ResNetConfig,
    ResNetForImageClassification,
    ResNetModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from modeling_mgcm.image_loading import ImageLoadError, load_image
from modeling_mgcm.vision_features import extract_image_features, image_feature_dim
from processing.images.feature_cache import ImageFeatureCache, sanitise_backbone_name

GOOD_IDS = ["rgb", "rgba", "grey", "palette", "wide"]
IMAGE_SIZE = 32


def jpeg_bytes(size=(48, 40), colour=(200, 30, 90)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    # A gradient, so that truncation cuts real image data and features differ between images.
    image.putdata([((x * 5) % 256, (y * 7) % 256, colour[2]) for y in range(size[1]) for x in range(size[0])])
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Five decodable images in different modes, an HTML page saved as .jpg and a truncated JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "rgb.jpg").write_bytes(jpeg_bytes())
    rgba = Image.new("RGBA", (30, 50), (10, 200, 30, 128))
    rgba.save(folder / "rgba.jpg", "PNG")  # tweets' ".jpg" files are often PNGs
    Image.linear_gradient("L").resize((40, 40)).save(folder / "grey.jpg", "JPEG")
    Image.new("RGB", (36, 36), (0, 90, 250)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "palette.jpg", "GIF"
    )
    (folder / "wide.jpg").write_bytes(jpeg_bytes(size=(90, 30), colour=(5, 5, 250)))
    (folder / "html.jpg").write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    full = jpeg_bytes(size=(64, 64))
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return folder


def corpus_split(folder: Path, ids: list[str]) -> datasets.Dataset:
    """Corpus rows (`id`, `image` as `datasets.Image()`); "notweetimage" has no image, "gone" a missing file."""
    return image_corpus_split(folder, ids, without_image="notweetimage")


ALL_IDS = [*GOOD_IDS, "html", "truncated", "gone", "notweetimage"]


@pytest.fixture
def corpus(image_folder) -> datasets.DatasetDict:
    """train holds every case; valid repeats two train IMGIDs, which must not be computed twice."""
    return datasets.DatasetDict(
        train=corpus_split(image_folder, ALL_IDS), valid=corpus_split(image_folder, ["rgb", "gone"])
    )


@pytest.fixture
def resnet(tiny_resnet_config) -> ResNetModel:
    torch.manual_seed(0)
    return ResNetModel(tiny_resnet_config).eval()


@pytest.fixture
def resnet_processor() -> ConvNextImageProcessor:
    # shortest_edge < 384 resizes then centre-crops to a square, as ConvNeXt's own processor does.
    return ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIZE})


def tiny_vit_config() -> ViTConfig:
    return ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )


def count_forward_passes(model: torch.nn.Module) -> list[bool]:
    """Records, for every real forward pass of `model`, whether it ran in training mode."""
    calls: list[bool] = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(module.training))
    return calls


def direct_features(model, processor, image_folder: Path, image_id: str) -> torch.Tensor:
    pixel_values = processor(images=[load_image(image_folder / f"{image_id}.jpg")], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        return extract_image_features(model, pixel_values)[0]


# ---------------------------------------------------------------------------- extract_image_features


def test_cnn_feature_map_is_flattened_to_row_major_regions(resnet, tiny_resnet_config):
    pixel_values = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        feature_map = resnet(pixel_values=pixel_values).last_hidden_state  # (B, C, h, w)
        regions = extract_image_features(resnet, pixel_values)
    batch, channels, height, width = feature_map.shape
    assert regions.shape == (batch, height * width, channels)
    assert channels == image_feature_dim(tiny_resnet_config)
    for row in range(height):
        for column in range(width):
            torch.testing.assert_close(regions[:, row * width + column], feature_map[:, :, row, column])


@pytest.mark.parametrize(
    "config",
    [
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic"),
        ConvNextConfig(hidden_sizes=[8, 12], depths=[1, 1], num_stages=2),
        tiny_vit_config(),
        CLIPVisionConfig(
            hidden_size=12,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=24,
            image_size=32,
            patch_size=8,
        ),
        CLIPConfig(
            vision_config={
                "hidden_size": 12,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 24,
                "image_size": 32,
                "patch_size": 8,
            },
            text_config={
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        ),
    ],
    ids=["resnet", "convnext", "vit", "clip-vision", "clip-dual-encoder"],
)
def test_feature_width_from_config_matches_every_backbone(config):
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        regions = extract_image_features(model, torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert regions.ndim == 3 and regions.shape[0] == 2
    assert regions.shape[-1] == image_feature_dim(config)


def test_transformer_tokens_are_returned_as_they_are():
    torch.manual_seed(0)
    model = ViTModel(tiny_vit_config()).eval()
    pixel_values = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(
            extract_image_features(model, pixel_values), model(pixel_values=pixel_values).last_hidden_state
        )
    assert extract_image_features(model, pixel_values).shape == (3, (IMAGE_SIZE // 8) ** 2 + 1, 16)


def test_bad_inputs_and_task_heads_are_refused(resnet, tiny_resnet_config):
    with pytest.raises(ValueError, match=r"\(batch_size, channels, height, width\).*\(3, 32, 32\)"):
        extract_image_features(resnet, torch.randn(3, IMAGE_SIZE, IMAGE_SIZE))
    classifier = ResNetForImageClassification(tiny_resnet_config).eval()
    with pytest.raises(ValueError, match="ResNetForImageClassification returned no last_hidden_state"):
        extract_image_features(classifier, torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(ValueError, match="neither hidden_sizes nor hidden_size"):
        image_feature_dim(SimpleNamespace(model_type="mystery"))


# ---------------------------------------------------------------------------- load_image


def test_load_image_decodes_any_mode_from_path_bytes_or_datasets_entry(image_folder):
    for image_id in GOOD_IDS:
        image = load_image(image_folder / f"{image_id}.jpg")
        assert image.mode == "RGB" and image.size[0] > 0
    rgba = load_image(str(image_folder / "rgba.jpg"))
    assert rgba.getpixel((0, 0)) == (10, 200, 30)
    data = (image_folder / "rgb.jpg").read_bytes()
    assert load_image(data).tobytes() == load_image(image_folder / "rgb.jpg").tobytes()
    # Embedded bytes win over a path, as in datasets; a path alone is read from disk.
    assert load_image({"path": "elsewhere/x.jpg", "bytes": data}).size == (48, 40)
    assert load_image({"path": str(image_folder / "wide.jpg"), "bytes": None}).size == (90, 30)


@pytest.mark.parametrize(
    "name, reason, message",
    [
        ("gone.jpg", "missing", r"gone\.jpg: missing image \(no such file\)"),
        ("html.jpg", "not_an_image", r"html\.jpg: not an image .*<!DOCTYPE html>"),
        ("truncated.jpg", "truncated", r"truncated\.jpg: truncated image"),
        ("", "unreadable", r"images: unreadable image file \(not a regular file\)"),
    ],
)
def test_load_image_names_the_file_and_the_reason(image_folder, name, reason, message):
    with pytest.raises(ImageLoadError, match=message) as caught:
        load_image(image_folder / name if name else image_folder)
    assert caught.value.reason == reason
    assert caught.value.is_missing == (reason == "missing")
    assert isinstance(caught.value, ValueError)
    # Survives datasets' worker processes.
    assert pickle.loads(pickle.dumps(caught.value)).reason == reason


def test_load_image_refuses_decompression_bombs(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # Above MAX_IMAGE_PIXELS PIL only warns, above twice it raises; both are refused here.
    for size in [(40, 30), (100, 100)]:
        buffer = io.BytesIO()
        Image.new("RGB", size).save(buffer, "PNG")
        with pytest.raises(ImageLoadError, match="possible decompression bomb") as caught:
            load_image(buffer.getvalue())
        assert caught.value.reason == "too_large"
    assert load_image(jpeg_bytes(size=(25, 20))).size == (25, 20)  # within the limit


def test_load_image_rejects_other_types():
    with pytest.raises(TypeError, match="path, bytes or a"):
        load_image(42)


# ---------------------------------------------------------------------------- ImageFeatureCache


def test_build_computes_each_unique_image_once_and_masks_broken_ones(
    tmp_path, corpus, image_folder, resnet, resnet_processor
):
    forward_passes = count_forward_passes(resnet)
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "tiny/resnet", batch_size=2)
    stats = cache.build(corpus)

    assert stats.computed_ids == GOOD_IDS
    assert stats.reused_ids == []
    assert stats.missing_ids == ["gone", "notweetimage"]
    assert stats.corrupt_ids == ["html", "truncated"]
    assert "html.jpg: not an image" in stats.problems["html"]
    assert "truncated image" in stats.problems["truncated"]
    # 5 decodable images in batches of 2; the repeated valid IMGIDs cost nothing.
    assert len(forward_passes) == 3 == cache.vision_forward_calls == stats.vision_forward_calls
    assert not any(forward_passes), "the backbone must run in eval mode"
    summary = json.loads(json.dumps(stats.to_dict()))
    assert (summary["computed"], summary["missing"], summary["corrupt"]) == (5, 2, 2)

    features, image_mask = cache.get(["wide", "html", "rgb", "notweetimage", "gone"])
    assert features.dtype == torch.float32 and image_mask.dtype == torch.long
    assert features.shape == (5, 16, 16)  # a 32x32 image gives a 4x4 grid of 16-d regions
    assert image_mask.tolist() == [1, 0, 1, 0, 0]
    assert torch.count_nonzero(features[[1, 3, 4]]) == 0
    assert cache.feature_shape == (16, 16)


def test_cached_features_equal_a_direct_forward(tmp_path, corpus, image_folder, resnet, resnet_processor):
    exact = ImageFeatureCache(
        tmp_path / "exact", resnet, resnet_processor, "r", batch_size=3, storage_dtype=torch.float32
    )
    half = ImageFeatureCache(tmp_path / "half", resnet, resnet_processor, "r", batch_size=3)
    exact.build(corpus)
    half.build(corpus)
    exact_features, _ = exact.get(GOOD_IDS)
    half_features, _ = half.get(GOOD_IDS)
    for position, image_id in enumerate(GOOD_IDS):
        expected = direct_features(resnet, resnet_processor, image_folder, image_id)
        torch.testing.assert_close(exact_features[position], expected, rtol=1e-5, atol=1e-6)
        # float16 keeps 11 significant bits: a relative error below 2**-11 of the feature scale.
        scale = expected.abs().max()
        assert (half_features[position] - expected).abs().max() <= scale * 2**-11
    assert not torch.allclose(exact_features[0], exact_features[4]), "different images, different features"


def test_second_epoch_second_build_and_second_run_run_no_forward_pass(
    tmp_path, corpus, resnet, resnet_processor
):
    forward_passes = count_forward_passes(resnet)
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "tiny/resnet", batch_size=4)
    cache.build(corpus)
    first_features, first_mask = cache.get(ALL_IDS)
    after_first_build = len(forward_passes)
    assert after_first_build == 2

    for _epoch in range(3):
        cache.get(ALL_IDS)
    second = cache.build(corpus)
    assert second.computed_ids == [] and second.reused_ids == GOOD_IDS
    assert second.vision_forward_calls == 0

    rerun = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "tiny/resnet", batch_size=4)
    features, image_mask = rerun.get(ALL_IDS)  # a new run may read before (or without) building
    rerun_stats = rerun.build(corpus)
    assert rerun_stats.reused_ids == GOOD_IDS and rerun_stats.corrupt_ids == ["html", "truncated"]
    assert rerun.vision_forward_calls == 0
    assert len(forward_passes) == after_first_build
    torch.testing.assert_close(features, first_features)
    assert torch.equal(image_mask, first_mask)


def test_a_cache_opened_before_another_one_built_reuses_its_work(tmp_path, corpus, resnet, resnet_processor):
    opened_early = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    builder = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    builder.build(corpus)
    index_file = builder.index_path.stat()
    stats = opened_early.build(corpus)
    assert stats.vision_forward_calls == 0 and stats.reused_ids == GOOD_IDS
    # Nothing changed, so nothing was rewritten (os.replace would give the index a new inode).
    assert builder.index_path.stat().st_ino == index_file.st_ino
    assert builder.index_path.stat().st_mtime_ns == index_file.st_mtime_ns


def test_build_only_computes_images_new_to_the_cache(tmp_path, image_folder, resnet, resnet_processor):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r", batch_size=8)
    cache.build(corpus_split(image_folder, ["rgb", "grey"]))
    stats = cache.build(corpus_split(image_folder, GOOD_IDS))
    assert stats.reused_ids == ["rgb", "grey"]
    assert stats.computed_ids == ["rgba", "palette", "wide"]
    assert stats.vision_forward_calls == 1


def test_broken_images_are_retried_once_the_file_is_fixed(tmp_path, image_folder, resnet, resnet_processor):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    dataset = corpus_split(image_folder, ["rgb", "truncated"])
    assert cache.build(dataset).corrupt_ids == ["truncated"]
    (image_folder / "truncated.jpg").write_bytes(jpeg_bytes(size=(64, 64)))
    stats = cache.build(dataset)
    assert stats.computed_ids == ["truncated"] and stats.corrupt_ids == []
    assert cache.get(["truncated"])[1].tolist() == [1]


def test_layout_is_safetensors_shards_named_by_imgid_with_a_hashed_index(
    tmp_path, corpus, resnet, resnet_processor
):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "org/tiny resnet", shard_size=2)
    cache.build(corpus)
    folder = tmp_path / "cache" / "org--tiny_resnet"
    assert cache.directory == folder
    index = json.loads((folder / "index.json").read_text())
    assert index["backbone_name"] == "org/tiny resnet"
    assert index["feature_shape"] == [16, 16]
    assert [shard["ids"] for shard in index["shards"]] == [["rgb", "rgba"], ["grey", "palette"], ["wide"]]
    assert sorted(index["unusable"]) == ["gone", "html", "notweetimage", "truncated"]
    assert index["unusable"]["truncated"]["reason"] == "truncated"
    for shard in index["shards"]:
        with safe_open(folder / shard["file"], framework="pt") as reader:
            assert sorted(reader.keys()) == sorted(shard["ids"])
            assert reader.get_tensor(shard["ids"][0]).dtype == torch.float16
    # Atomic writes leave no temporary files behind.
    assert sorted(path.name for path in folder.iterdir()) == [
        "index.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_damaged_shard_is_detected_and_rebuilt(tmp_path, corpus, resnet, resnet_processor, damage, caplog):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r", shard_size=2)
    cache.build(corpus)
    expected, _ = cache.get(GOOD_IDS)
    shard = cache.directory / "shard-00001.safetensors"  # holds "grey" and "palette"
    data = bytearray(shard.read_bytes())
    if damage == "flip a byte":
        data[-3] ^= 0xFF  # inside the tensor data: the header still parses
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) - 10]))
    else:
        shard.unlink()

    with caplog.at_level(logging.WARNING, logger="processing.images.feature_cache"):
        reopened = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r", shard_size=2)
    assert "shard-00001.safetensors fail verification" in caplog.text
    with pytest.raises(KeyError, match="run build"):
        reopened.get(["grey"])
    # A build that does not need the lost images still drops the bad shard from the index.
    assert reopened.build(corpus["valid"]).vision_forward_calls == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="processing.images.feature_cache"):
        ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r", shard_size=2)
    assert "fail verification" not in caplog.text
    stats = reopened.build(corpus)
    assert stats.computed_ids == ["grey", "palette"]
    assert stats.reused_ids == ["rgb", "rgba", "wide"]
    features, image_mask = reopened.get(GOOD_IDS)
    assert image_mask.tolist() == [1] * 5
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize(
    "index_text",
    [
        '{"format_version": 1, "shards": [',
        '{"format_version": 1, "backbone_name": "r", "shards": "x", "unusable": [], "feature_shape": null}',
        '{"format_version": 1, "backbone_name": "r", "shards": [{"file": "shard-00000.safetensors", "ids": 3}],'
        ' "unusable": {}, "feature_shape": [16, 16]}',
    ],
    ids=["cut short", "wrong types", "malformed shard entry"],
)
def test_an_unreadable_index_means_a_full_rebuild(tmp_path, corpus, resnet, resnet_processor, index_text):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    cache.build(corpus)
    cache.index_path.write_text(index_text)
    reopened = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    assert reopened.build(corpus).computed_ids == GOOD_IDS


def test_features_of_another_shape_under_the_same_name_are_refused(
    tmp_path, corpus, resnet, resnet_processor
):
    ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r").build(corpus["valid"])
    larger_images = ConvNextImageProcessor(size={"shortest_edge": 64})
    cache = ImageFeatureCache(tmp_path / "cache", resnet, larger_images, "r")
    with pytest.raises(ValueError, match=r"shape \[64, 16\].*holds features of shape \[16, 16\]"):
        cache.build(corpus)


def test_backbone_names_that_share_a_folder_are_caught(tmp_path, corpus, resnet, resnet_processor):
    assert sanitise_backbone_name("microsoft/resnet-152") == "microsoft--resnet-152"
    assert len(sanitise_backbone_name("x" * 500)) <= 100
    assert sanitise_backbone_name("x" * 500) != sanitise_backbone_name("x" * 499)
    for bad_name in ["", "  ", "..", "."]:
        with pytest.raises(ValueError, match="backbone_name"):
            sanitise_backbone_name(bad_name)
    ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "a/b").build(corpus["valid"])
    with pytest.raises(ValueError, match="belongs to backbone 'a/b', not 'a--b'"):
        ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "a--b")


def test_vit_backbone_tokens_are_cached(tmp_path, corpus, image_folder):
    torch.manual_seed(0)
    vit = ViTModel(tiny_vit_config()).eval()
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    cache = ImageFeatureCache(tmp_path / "cache", vit, processor, "tiny/vit", storage_dtype=torch.float32)
    cache.build(corpus)
    features, image_mask = cache.get(["palette", "gone"])
    assert features.shape == (2, 17, 16) and image_mask.tolist() == [1, 0]
    torch.testing.assert_close(
        features[0], direct_features(vit, processor, image_folder, "palette"), rtol=1e-5, atol=1e-6
    )


def test_a_corpus_without_any_usable_image_still_gives_zero_features(
    tmp_path, image_folder, resnet, resnet_processor
):
    dataset = corpus_split(image_folder, ["gone", "html", "notweetimage"])
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    cache.build(dataset)
    features, image_mask = cache.get(["gone", "html"])
    assert features.shape == (2, 16, 16) and image_mask.tolist() == [0, 0]
    assert torch.count_nonzero(features) == 0
    rerun = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    rerun.build(dataset)
    assert rerun.vision_forward_calls == 0


def test_build_restores_the_model_mode_and_a_read_only_cache_serves_features(
    tmp_path, corpus, resnet, resnet_processor
):
    resnet.train()
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    cache.build(corpus["valid"])
    assert resnet.training
    read_only = ImageFeatureCache(tmp_path / "cache", None, None, "r")
    assert read_only.build(corpus["valid"]).reused_ids == ["rgb"]
    assert read_only.get(["rgb", "gone"])[1].tolist() == [1, 0]
    with pytest.raises(ValueError, match="no vision_model and image_processor"):
        read_only.build(corpus)


def test_unknown_ids_and_bad_datasets_are_reported(tmp_path, corpus, resnet, resnet_processor):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    cache.build(corpus["valid"])
    with pytest.raises(KeyError, match=r"\['wide'\].*run build\(\) on their dataset first"):
        cache.get(["rgb", "wide"])
    with pytest.raises(ValueError, match=r"lacks the columns \['image'\]"):
        cache.build(datasets.Dataset.from_dict({"id": ["a"]}))
    with pytest.raises(TypeError, match="Dataset or DatasetDict"):
        cache.build([{"id": "a", "image": None}])


def test_float16_overflow_is_refused_with_a_way_out(tmp_path, corpus, resnet_processor):
    class LoudBackbone(torch.nn.Module):
        """Any module with a `last_hidden_state` output works; this one exceeds float16's range."""

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1e6))

        def forward(self, pixel_values, return_dict=True):
            pooled = torch.nn.functional.avg_pool2d(pixel_values, 8)
            return SimpleNamespace(last_hidden_state=pooled * self.scale)

    cache = ImageFeatureCache(tmp_path / "cache", LoudBackbone(), resnet_processor, "loud")
    with pytest.raises(ValueError, match="not finite in torch.float16.*storage_dtype=torch.float32"):
        cache.build(corpus["valid"])
    wide = ImageFeatureCache(
        tmp_path / "cache32", LoudBackbone(), resnet_processor, "loud", storage_dtype=torch.float32
    )
    wide.build(corpus["valid"])
    assert wide.get(["rgb"])[0].abs().max() > 65504


def test_cache_survives_pickling_for_dataloader_workers(tmp_path, corpus, resnet, resnet_processor):
    cache = ImageFeatureCache(tmp_path / "cache", resnet, resnet_processor, "r")
    cache.build(corpus)
    expected = cache.get(GOOD_IDS)[0]
    copy = pickle.loads(pickle.dumps(cache))
    torch.testing.assert_close(copy.get(GOOD_IDS)[0], expected)
