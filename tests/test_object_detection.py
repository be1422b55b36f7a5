"""`detect_objects`: any detector, once per unique image, filtered, cached in the objects file the loader reads."""

import io
import json
import logging
import re
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_corpora import image_corpus_split

from processing import CorpusFormatError, load_tweet_corpus, read_objects_file
from processing.images.object_detection import detect_objects, select_detections, write_objects_file

DOCS = Path(__file__).resolve().parents[1] / "docs" / "objects_format.md"
# The red channel of each test image tells the fake detector which image it sees.
RED_OF = {"dog": 10, "cars": 60, "empty": 110, "street": 160}


def jpeg(path: Path, red: int, size=(24, 16)) -> None:
    Image.new("RGB", size, (red, 40, 40)).save(path, "JPEG", quality=95)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for image_id, red in RED_OF.items():
        jpeg(folder / f"{image_id}.jpg", red)
    (folder / "html.jpg").write_bytes(b"<html>rate limited</html>")
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    return folder


def corpus_split(folder: Path, ids: list[str]) -> datasets.Dataset:
    """Corpus rows (`id`, `image` as `datasets.Image()`); "noimage" has no image, "gone" a missing file."""
    return image_corpus_split(folder, ids, without_image="noimage")


class FakeDetector:
    """Answers like a transformers object-detection pipeline and records which images it saw."""

    ANSWERS = {
        "dog": [
            {"score": 0.65, "label": "cat", "box": {"xmin": 0, "ymin": 0, "xmax": 4, "ymax": 4}},
            {"score": 0.97, "label": "dog", "box": {"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}},
        ],
        "cars": [
            {"score": 0.71, "label": "car", "box": {}},
            {"score": 0.99, "label": "car", "box": {}},
            {"score": 0.7, "label": "truck", "box": {}},
            {"score": 0.85, "label": "person", "box": {}},
            {"score": 0.9, "label": "bus", "box": {}},
            {"score": 0.8, "label": "bicycle", "box": {}},
            {"score": 0.75, "label": "car", "box": {}},
        ],
        "empty": [{"score": 0.2, "label": "kite", "box": {}}],
        "street": [],
    }

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, image: Image.Image) -> list[dict]:
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        red = image.getpixel((0, 0))[0]
        image_id = min(RED_OF, key=lambda name: abs(RED_OF[name] - red))
        self.seen.append(image_id)
        return [dict(detection) for detection in self.ANSWERS[image_id]]


ALL_IDS = [*RED_OF, "html", "truncated", "gone", "noimage"]


@pytest.fixture
def corpus(image_folder) -> datasets.DatasetDict:
    """Every case in train; valid and test repeat IMGIDs that must not be detected twice."""
    return datasets.DatasetDict(
        train=corpus_split(image_folder, ALL_IDS),
        valid=corpus_split(image_folder, ["dog", "cars"]),
        test=corpus_split(image_folder, ["dog", "html"]),
    )


def test_detector_runs_once_per_unique_image_and_keeps_the_best(corpus):
    detector = FakeDetector()
    objects = detect_objects(corpus, detector, show_progress=False)
    assert detector.seen == ["dog", "cars", "empty", "street"]
    assert dict(objects) == {
        "dog": [{"label": "dog", "score": 0.97}],
        # score >= 0.7, highest first, at most 5; the boxes are dropped.
        "cars": [
            {"label": "car", "score": 0.99},
            {"label": "bus", "score": 0.9},
            {"label": "person", "score": 0.85},
            {"label": "bicycle", "score": 0.8},
            {"label": "car", "score": 0.75},
        ],
        "empty": [],
        "street": [],
    }
    assert objects.stats.detected_ids == ["dog", "cars", "empty", "street"]
    assert objects.stats.missing_ids == ["gone", "noimage"]
    assert objects.stats.corrupt_ids == ["html", "truncated"]
    assert "html.jpg: not an image" in objects.stats.problems["html"]
    assert "truncated image" in objects.stats.problems["truncated"]


def test_threshold_and_top_k_are_the_callers(corpus):
    objects = detect_objects(corpus["valid"], FakeDetector(), threshold=0.6, top_k=2, show_progress=False)
    assert objects["dog"] == [{"label": "dog", "score": 0.97}, {"label": "cat", "score": 0.65}]
    assert objects["cars"] == [{"label": "car", "score": 0.99}, {"label": "bus", "score": 0.9}]
    everything = detect_objects(
        corpus["valid"], FakeDetector(), threshold=0.0, top_k=None, show_progress=False
    )
    assert len(everything["cars"]) == 7
    # A score equal to the threshold is kept; equal scores keep the detector's order.
    assert select_detections([{"label": "truck", "score": 0.7}], 0.7, 5) == [{"label": "truck", "score": 0.7}]
    assert select_detections(
        [{"label": "a", "score": 0.8}, {"label": "b", "score": 0.9}, {"label": "c", "score": 0.8}], 0.5, None
    ) == [{"label": "b", "score": 0.9}, {"label": "a", "score": 0.8}, {"label": "c", "score": 0.8}]


def test_the_objects_file_is_what_the_corpus_loader_reads(tmp_path, corpus, image_folder):
    output_file = tmp_path / "out" / "objects.json"
    objects = detect_objects(corpus, FakeDetector(), output_file=output_file, show_progress=False)
    assert read_objects_file(output_file) == dict(objects)
    # Missing and corrupt images are left out of the file, so that a later call retries them.
    assert sorted(json.loads(output_file.read_text())) == ["cars", "dog", "empty", "street"]
    # One IMGID per line, so the loader's errors can name a line.
    assert output_file.read_text().splitlines()[1] == '  "dog": [{"label": "dog", "score": 0.97}],'
    assert [path.name for path in output_file.parent.iterdir()] == ["objects.json"]

    corpus_folder = tmp_path / "corpus"
    corpus_folder.mkdir()
    (corpus_folder / "train.txt").write_text("IMGID:dog\nRex\tB-PER\n\nIMGID:gone\nParis\tB-LOC\n\n")
    loaded = load_tweet_corpus(corpus_folder, image_dir=image_folder, objects_file=output_file)
    assert loaded["train"]["objects"] == [[{"label": "dog", "score": pytest.approx(0.97)}], []]


def test_a_second_call_reuses_the_file_and_detects_only_new_images(tmp_path, corpus, image_folder):
    output_file = tmp_path / "objects.json"
    detect_objects(corpus["valid"], FakeDetector(), output_file=output_file, show_progress=False)

    detector = FakeDetector()
    objects = detect_objects(corpus, detector, output_file=output_file, show_progress=False)
    assert detector.seen == ["empty", "street"]
    assert objects.stats.reused_ids == ["dog", "cars"]
    assert objects.stats.detected_ids == ["empty", "street"]
    assert sorted(read_objects_file(output_file)) == ["cars", "dog", "empty", "street"]

    # A fixed image is picked up by the next call; nothing else runs again.
    jpeg(image_folder / "html.jpg", RED_OF["dog"])
    detector = FakeDetector()
    objects = detect_objects(corpus, detector, output_file=output_file, show_progress=False)
    assert detector.seen == ["dog"] and objects.stats.detected_ids == ["html"]
    assert objects["html"] == [{"label": "dog", "score": 0.97}]

    # A stricter threshold re-selects the cached entries without running the detector.
    detector = FakeDetector()
    strict = detect_objects(corpus, detector, threshold=0.95, output_file=output_file, show_progress=False)
    assert detector.seen == []
    assert strict["cars"] == [{"label": "car", "score": 0.99}]
    assert read_objects_file(output_file)["cars"] == [{"label": "car", "score": 0.99}]


def test_missing_and_corrupt_images_are_logged(corpus, caplog):
    with caplog.at_level(logging.WARNING, logger="processing.images.object_detection"):
        detect_objects(corpus, FakeDetector(), show_progress=False)
    assert re.search(
        r"2 missing images get no objects, e\.g\. IMGID gone: .*gone\.jpg: missing image", caplog.text
    )
    assert re.search(
        r"2 corrupt images get no objects, e\.g\. IMGID html: .*html\.jpg: not an image", caplog.text
    )
    summary = detect_objects(corpus, FakeDetector(), show_progress=False).stats.to_dict()
    assert json.loads(json.dumps(summary))["corrupt_ids"] == ["html", "truncated"]


def test_a_failing_detector_names_the_image_and_keeps_the_work_done(tmp_path, corpus):
    def detector(image):
        if image.getpixel((0, 0))[0] > 100:
            raise RuntimeError("out of memory")
        return [{"label": "dog", "score": 0.9}]

    output_file = tmp_path / "objects.json"
    with pytest.raises(RuntimeError, match="the detector failed on IMGID empty: out of memory"):
        detect_objects(corpus, detector, output_file=output_file, show_progress=False)
    assert read_objects_file(output_file) == {
        "dog": [{"label": "dog", "score": 0.9}],
        "cars": [{"label": "dog", "score": 0.9}],
    }


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"label": "dog", "score": 0.9}, "must return a list"),
        (["dog"], r"detection 0: expected a \{'label', 'score'\} dict"),
        ([{"label": 17, "score": 0.9}], "label must be a non-empty class name string; got 17"),
        ([{"label": "dog", "score": 1.5}], r"score must be a number in \[0, 1\]; got 1.5"),
        ([{"label": "dog", "score": float("nan")}], r"score must be a number in \[0, 1\]; got nan"),
        ([{"label": "dog"}], r"score must be a number in \[0, 1\]; got None"),
    ],
)
def test_bad_detector_output_is_refused_with_the_imgid(corpus, answer, message):
    with pytest.raises(ValueError, match="IMGID dog.*" + message):
        detect_objects(corpus["valid"], lambda image: answer, show_progress=False)


def test_numpy_and_torch_scores_are_accepted(corpus):
    objects = detect_objects(
        corpus["valid"],
        lambda image: [{"label": "a", "score": np.float32(0.75)}, {"label": "b", "score": torch.tensor(0.8)}],
        show_progress=False,
    )
    assert objects["dog"] == [{"label": "b", "score": pytest.approx(0.8)}, {"label": "a", "score": 0.75}]
    assert all(type(item["score"]) is float for item in objects["dog"])


def test_arguments_and_an_invalid_existing_file_are_refused(tmp_path, corpus):
    for bad in [{"threshold": 1.5}, {"threshold": "0.7"}, {"top_k": 0}, {"top_k": 2.5}]:
        with pytest.raises(ValueError, match="threshold|top_k"):
            detect_objects(corpus, FakeDetector(), show_progress=False, **bad)
    with pytest.raises(TypeError, match="callable"):
        detect_objects(corpus, "facebook/detr-resnet-50")
    output_file = tmp_path / "objects.json"
    output_file.write_text('{\n  "dog": [{"label": "dog", "score": 3}]\n}\n')
    with pytest.raises(
        CorpusFormatError, match=r"objects\.json, line 2: .*score must be a number in \[0, 1\]"
    ):
        detect_objects(corpus, FakeDetector(), output_file=output_file, show_progress=False)
    assert 'score": 3' in output_file.read_text(), "a file the user must fix is left as it is"


def test_write_objects_file_round_trips_unicode_labels(tmp_path):
    objects = {"16_05_01_127": [{"label": "café table", "score": 0.5}], "1": []}
    write_objects_file(objects, tmp_path / "objects.json")
    assert read_objects_file(tmp_path / "objects.json") == objects


def test_the_documented_example_is_a_valid_objects_file(tmp_path):
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL).group(1)
    (tmp_path / "example.json").write_text(example, encoding="utf-8")
    objects = read_objects_file(tmp_path / "example.json")
    assert objects["16_05_01_127"][0] == {"label": "person", "score": 0.98}
    assert objects["73309"] == []


def test_a_transformers_object_detection_pipeline_plugs_in(corpus):
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig, pipeline
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    torch.manual_seed(0)
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
        ),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        num_queries=6,
        id2label={0: "person", 1: "dog", 2: "car"},
        label2id={"person": 0, "dog": 1, "car": 2},
    )
    detector = pipeline(
        "object-detection",
        model=DetrForObjectDetection(config).eval(),
        image_processor=DetrImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}),
    )
    # A random model is unsure of everything: keep all its queries.
    objects = detect_objects(
        corpus["valid"], partial(detector, threshold=0.0), threshold=0.0, top_k=4, show_progress=False
    )
    assert sorted(objects) == ["cars", "dog"]
    for detections in objects.values():
        assert len(detections) == 4
        assert {item["label"] for item in detections} <= {"person", "dog", "car"}
        assert [item["score"] for item in detections] == sorted(
            (item["score"] for item in detections), reverse=True
        )
        assert all(set(item) == {"label", "score"} for item in detections)
