"""`export_corpus_dataset` and `python -m processing.corpus export`: a corpus written as a Hub dataset folder
(Parquet files and a README.md card) that `datasets.load_dataset(folder)` reads back to the same features and
rows, images embedded; unusable images left None and reported; the folder swapped in only when complete."""

import io
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard
from PIL import Image
from tiny_corpora import write_file

from processing.corpus import hub_dataset
from processing.corpus.cli import main
from processing.corpus.hub_dataset import (
    KNOWN_CORPUS_SOURCES,
    CorpusSource,
    export_corpus_dataset,
    infer_corpus_source,
)
from processing.corpus.labels import LABEL_NAMES
from processing.corpus.synthetic import make_synthetic_corpus
from processing.corpus.tweet_corpus import load_tweet_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_SOURCE = CorpusSource(
    pretty_name="Tiny tweets", description="Four tweets a test wrote.", terms="Tests only."
)


def jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def side_files(corpus_dir, tmp_path):
    """Images (101 a JPEG, 102 an HTML error page, 103 none, 201 a PNG), captions, knowledge and objects."""
    images = tmp_path / "images"
    write_file(images / "101.jpg", jpeg_bytes((200, 30, 30)))
    write_file(images / "102.jpg", b"<html>404 not found</html>")
    png = io.BytesIO()
    Image.new("RGB", (5, 5), (0, 90, 0)).save(png, format="PNG")
    write_file(images / "201.jpg", png.getvalue())
    return {
        "image_dir": images,
        "captions_file": write_file(
            tmp_path / "captions.txt", "101.jpg :a red square\n201.jpg :a green one\n"
        ),
        "objects_file": write_file(tmp_path / "objects.json", '{"101": [{"label": "person", "score": 0.5}]}'),
        "knowledge": write_file(tmp_path / "knowledge.txt", "101.jpg :Barack Obama is a person.\n"),
    }


@pytest.fixture
def corpus(corpus_dir, side_files):
    return load_tweet_corpus(
        corpus_dir,
        image_dir=side_files["image_dir"],
        captions_file=side_files["captions_file"],
        objects_file=side_files["objects_file"],
        text_source_files={"knowledge": side_files["knowledge"]},
    )


def load_folder(folder: Path, tmp_path: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "datasets-cache"))


def undecoded(dataset: datasets.Dataset) -> list[dict]:
    """Rows with every image as its `{"bytes", "path"}` entry."""
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset.to_list()


def assert_same_corpus(loaded: datasets.DatasetDict, corpus: datasets.DatasetDict, left_out=()) -> None:
    """Same splits, features and rows; every image that was usable holds the bytes of its file, the ids in
    `left_out` have none."""
    assert list(loaded) == list(corpus)
    for split in corpus:
        assert loaded[split].features == corpus[split].features
        for written, original in zip(undecoded(loaded[split]), undecoded(corpus[split]), strict=True):
            image, source = written.pop("image"), original.pop("image")
            assert written == original
            if source is None or original["id"] in left_out:
                assert image is None, original["id"]
            else:
                expected = source["bytes"] or Path(source["path"]).read_bytes()
                assert image["bytes"] == expected
                assert image["path"] == (source["path"] and Path(source["path"]).name)


def test_a_loaded_corpus_round_trips_with_its_images_embedded(corpus, tmp_path, side_files):
    folder = tmp_path / "hub-dataset"
    export = export_corpus_dataset(corpus, folder, source=TINY_SOURCE)
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/valid-00000-of-00001.parquet",
    ]
    loaded = load_folder(folder, tmp_path)
    assert_same_corpus(loaded, corpus, left_out={"102"})
    assert loaded["train"].features["ner_tags"].feature.names == LABEL_NAMES
    assert list(loaded["train"].features) == [
        "id",
        "tokens",
        "ner_tags",
        "image",
        "caption",
        "knowledge",
        "objects",
    ]
    # Self-contained: the images decode with the source files gone.
    for path in side_files["image_dir"].iterdir():
        path.unlink()
    decoded = load_folder(folder, tmp_path)["train"][0]["image"]
    assert decoded.size == (12, 8) and decoded.convert("RGB").getpixel((6, 4))[0] > 150
    assert export.split_sizes == {"train": 3, "valid": 1}
    assert export.embedded_images == {"train": 1, "valid": 1}
    assert export.absent_images == {"train": 1, "valid": 0}  # 103 has no file; 102's file is no image


def test_an_image_that_does_not_decode_stays_none_and_is_reported(corpus, tmp_path, side_files, caplog):
    write_file(side_files["image_dir"] / "201.jpg", jpeg_bytes((0, 0, 255))[:60])  # truncated
    with caplog.at_level("WARNING", logger="processing.corpus.hub_dataset"):
        export = export_corpus_dataset(corpus, tmp_path / "out", source=TINY_SOURCE)
    reasons = {(bad.split, bad.id, bad.column): bad.reason for bad in export.bad_images}
    assert set(reasons) == {("train", "102", "image"), ("valid", "201", "image")}
    assert (
        "102.jpg" in reasons["train", "102", "image"] and "not an image" in reasons["train", "102", "image"]
    )
    assert "201.jpg" in reasons["valid", "201", "image"]
    assert (
        "valid: 1 tweets, 0 images embedded, 0 without image, 1 unusable images left out" in export.summary()
    )
    assert "'102': image left out" in caplog.text
    assert_same_corpus(load_folder(tmp_path / "out", tmp_path), corpus, left_out={"102", "201"})


def test_in_memory_image_bytes_of_the_synthetic_corpus_round_trip(tmp_path):
    corpus = make_synthetic_corpus(6, 3, 2, seed=1, image_size=16)
    export = export_corpus_dataset(corpus, tmp_path / "synthetic", source=TINY_SOURCE)
    loaded = load_folder(tmp_path / "synthetic", tmp_path)
    assert_same_corpus(loaded, corpus)
    with_image = sum(row["image"] is not None for split in corpus.values() for row in undecoded(split))
    assert sum(export.embedded_images.values()) == with_image > 0 and not export.bad_images


def test_the_card_holds_the_features_splits_data_files_source_and_terms(corpus, tmp_path):
    notes = {"knowledge": "PGIM's ChatGPT knowledge"}
    export_corpus_dataset(
        corpus, tmp_path / "out", source="twitter2015", pretty_name="Tiny Twitter-2015", column_notes=notes
    )
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    data = card.data.to_dict()
    assert data["pretty_name"] == "Tiny Twitter-2015" and data["license"] == "unknown"
    assert data["task_categories"] == ["token-classification"] and data["language"] == ["en"]
    assert data["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*"},
                {"split": "valid", "path": "data/valid-*"},
            ],
        }
    ]
    info = datasets.info.DatasetInfosDict.from_dataset_card_data(card.data)["default"]
    assert info.features == corpus["train"].features
    assert {name: split.num_examples for name, split in info.splits.items()} == {"train": 3, "valid": 1}
    assert "Zhang et al., AAAI 2018" in card.text and "@inproceedings{zhang2018adaptive" in card.text
    assert "Twitter's terms of service apply" in card.text
    assert "| `knowledge` | string | PGIM's ChatGPT knowledge |" in card.text
    assert "| train | 3 | 1 | 2 |" in card.text  # tweets, images embedded, no image


def test_the_source_is_recognised_by_its_split_sizes_or_must_be_named(tmp_path):
    def sized(**sizes):
        return datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({"id": [str(i) for i in range(n)]})
                for split, n in sizes.items()
            }
        )

    assert infer_corpus_source(sized(train=3373, valid=723)) is KNOWN_CORPUS_SOURCES["twitter2017"]
    assert infer_corpus_source(sized(test=3257)) is KNOWN_CORPUS_SOURCES["twitter2015"]
    assert infer_corpus_source(sized(train=4000, valid=723)) is None
    with pytest.raises(ValueError, match=r"splits of \{'train': 2\} tweets: pass source="):
        export_corpus_dataset(sized(train=2), tmp_path / "out")
    with pytest.raises(ValueError, match="unknown corpus source 'twitter2016'"):
        export_corpus_dataset(sized(train=2), tmp_path / "out", source="twitter2016")
    assert not list(tmp_path.iterdir())


def test_a_non_empty_folder_is_kept_unless_overwrite_and_a_failed_export_leaves_no_trace(
    corpus, tmp_path, monkeypatch
):
    folder = tmp_path / "out"
    write_file(folder / "notes.txt", "mine")
    with pytest.raises(FileExistsError, match="out is not empty"):
        export_corpus_dataset(corpus, folder, source=TINY_SOURCE)
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]

    def failing_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hub_dataset, "_dataset_card", failing_card)
    with pytest.raises(OSError, match="disk full"):
        export_corpus_dataset(corpus, folder, source=TINY_SOURCE, overwrite=True)
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    monkeypatch.undo()

    export_corpus_dataset(corpus, folder, source=TINY_SOURCE, overwrite=True)
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "data"]
    assert not [
        path for path in tmp_path.iterdir() if path.name.startswith(".")
    ]  # no partial or previous folder


def test_the_export_command_takes_the_loader_options(corpus_dir, side_files, tmp_path, capsys):
    out = tmp_path / "cli-out"
    argv = [
        "export",
        str(corpus_dir),
        str(out),
        "--image-dir",
        str(side_files["image_dir"]),
        "--captions-file",
        str(side_files["captions_file"]),
        "--objects-file",
        str(side_files["objects_file"]),
        "--text-source",
        f"knowledge={side_files['knowledge']}",
        "--repair-bio",
        "--pretty-name",
        "Tiny tweets",
        "--description",
        "Four tweets a test wrote.",
        "--terms",
        "Tests only.",
        "--column-note",
        "caption=BLIP-2 captions",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "train: 3 tweets, 1 images embedded" in captured.out
    assert "left out: train 102: " in captured.err
    expected = load_tweet_corpus(
        corpus_dir,
        image_dir=side_files["image_dir"],
        captions_file=side_files["captions_file"],
        objects_file=side_files["objects_file"],
        repair_bio=True,
        text_source_files={"knowledge": side_files["knowledge"]},
    )
    assert_same_corpus(load_folder(out, tmp_path), expected, left_out={"102"})
    card = DatasetCard.load(out / "README.md")
    assert card.data.pretty_name == "Tiny tweets" and "Tests only." in card.text
    assert "| `caption` | string | BLIP-2 captions |" in card.text
    # A second run into the same folder is refused without --overwrite.
    assert main(argv) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--description", "d", "--terms", "t"], "needs --pretty-name"),
        (["--source", "twitter2015", "--terms", "t"], "not both"),
        (["--column-note", "caption"], "--column-note takes NAME=VALUE"),
    ],
)
def test_the_export_command_refuses_an_incomplete_source(corpus_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(corpus_dir), str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_export_command_names_an_unrecognised_corpus(corpus_dir, tmp_path, capsys):
    assert main(["export", str(corpus_dir), str(tmp_path / "out")]) == 1
    assert "cannot tell which corpus" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")
def test_twitter2015_with_captions_and_knowledge_round_trips_through_the_command(tmp_path):
    captions = SHARED_DATA / "captions" / "twitter2015_blip2.txt"
    knowledge = SHARED_DATA / "knowledge" / "twitter2015_pgim.txt"
    out = tmp_path / "twitter2015"
    command = [
        sys.executable,
        "-m",
        "processing.corpus",
        "export",
        str(SHARED_DATA / "twitter2015"),
        str(out),
    ]
    command += ["--captions-file", str(captions), "--text-source", f"knowledge={knowledge}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test: 3257 tweets" in result.stdout
    corpus = load_tweet_corpus(
        SHARED_DATA / "twitter2015", captions_file=captions, text_source_files={"knowledge": knowledge}
    )
    loaded = load_folder(out, tmp_path)
    assert {split: len(rows) for split, rows in loaded.items()} == {
        "train": 4000,
        "valid": 1000,
        "test": 3257,
    }
    assert_same_corpus(loaded, corpus)
    card = DatasetCard.load(out / "README.md")
    assert card.data.pretty_name == "Twitter-2015 multimodal NER" and "Zhang et al., AAAI 2018" in card.text
