"""The training package called in-process (`processing.training`): the command line's resolved defaults, the
window rows of a corpus, the run's length, and `loop.main` training the synthetic corpus end to end with its
text-only comparison. (Runs of `examples/train.py` in subprocesses: test_train_script.py and
test_interrupted_training.py.)"""

import json
import sys

import datasets
import pytest
from accelerate import Accelerator

from modeling_mgcm import MGCMConfig, MGCMProcessor
from modeling_mgcm.configuration_mgcm import VISUAL_GRANULARITIES
from processing.training import loop
from processing.training.arguments import parse_args
from processing.training.window_rows import tokenised_windows

TINY_RUN = ["--synthetic", "--synthetic_sizes", "16,8,8", "--seed", "5", "--per_device_train_batch_size", "8"]


def test_the_synthetic_defaults_read_every_granularity_at_the_tiny_encoders_rates():
    args = parse_args([])
    assert args.synthetic and args.granularities == [*VISUAL_GRANULARITIES, "caption"]
    assert (args.learning_rate, args.fusion_learning_rate, args.crf_learning_rate) == (1e-3, 1e-3, 1e-2)
    assert (args.num_train_epochs, args.augmentation_mode, args.segment_sources) == (12, "none", [])


def test_a_pretrained_encoder_on_a_real_corpus_gets_the_paper_s_rates_and_its_text_sources():
    args = parse_args(
        ["--dataset_dir", "corpus", "--text_model", "encoder", "--text_source", "knowledge=k.txt"]
        + ["--captions_file", "c.txt", "--caption_as_text_segment"]
    )
    assert not args.synthetic and args.granularities == ["knowledge"]
    assert args.text_source_files == {"caption": "c.txt", "knowledge": "k.txt"}
    assert args.segment_sources == ["caption"]
    assert (args.learning_rate, args.fusion_learning_rate, args.num_train_epochs) == (3e-5, 1e-3, 5)


def test_a_granularity_that_is_neither_visual_nor_a_text_source_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--granularities", "image,audio"])
    assert (
        "--granularities: unknown ['audio']; choose from ('image', 'objects', 'caption')"
        in capsys.readouterr().err
    )


def test_the_windows_drop_text_sources_the_model_does_not_read_even_without_a_train_split(tiny_tokenizer):
    processor = MGCMProcessor(tiny_tokenizer)
    split = datasets.Dataset.from_dict(
        {"id": ["1", "2"], "tokens": [["obama", "in", "paris"], ["london"]], "caption": ["a man", ""]}
    )
    text_only = MGCMConfig(text_sources=[], use_image=False, use_objects=False)
    reading_caption = MGCMConfig(text_sources=["caption"], use_image=False, use_objects=False)

    for corpus in (datasets.DatasetDict(train=split, test=split), datasets.DatasetDict(test=split)):
        assert "caption_input_ids" not in tokenised_windows(processor, corpus, text_only)["test"].column_names
    windows = tokenised_windows(processor, datasets.DatasetDict(test=split), reading_caption)["test"]
    assert windows["caption_input_ids"][1] == []
    emptied = tokenised_windows(processor, datasets.DatasetDict(test=split), reading_caption, ["caption"])
    assert emptied["test"]["caption_input_ids"] == [[], []]


@pytest.mark.parametrize(
    "epochs, max_steps, accumulation, expected",
    [(3, None, 1, (3, 15)), (3, None, 2, (3, 9)), (3, 7, 1, (2, 7)), (1, 12, 1, (3, 12))],
)
def test_the_run_length_follows_max_train_steps_over_epochs(epochs, max_steps, accumulation, expected):
    args = parse_args(
        ["--num_train_epochs", str(epochs), "--gradient_accumulation_steps", str(accumulation)]
        + (["--max_train_steps", str(max_steps)] if max_steps else [])
    )
    loop.set_training_length(args, batches_per_epoch=5)
    assert (args.num_train_epochs, args.max_train_steps) == expected


def test_resuming_from_latest_without_a_checkpoint_starts_from_scratch(tmp_path):
    args = parse_args(["--resume_from_checkpoint", "latest"])
    state = loop.initial_state(args, Accelerator(), tmp_path / "checkpoints")
    assert state == {
        "epoch": 0,
        "batches_in_epoch": 0,
        "completed_steps": 0,
        "best_f1": -1.0,
        "best_epoch": None,
        "history": [],
    }


def test_main_trains_the_synthetic_corpus_and_its_text_only_twin_with_the_same_flags(tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    argv = [
        *TINY_RUN,
        "--num_train_epochs",
        "1",
        "--checkpointing_steps",
        "no",
        "--output_dir",
        str(output_dir),
    ]
    # As the script is run: main() reads the command line.
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])

    loop.main()

    results = json.loads((output_dir / "results.json").read_text())
    baseline = json.loads((output_dir / "text_only" / "results.json").read_text())
    assert list(results) == ["metrics", "history", "ambiguous_mentions", "run", "training", "images"]
    assert set(results["metrics"]) == {"train", "valid", "test"}
    assert results["training"]["optimizer_steps"] == 2 and results["history"][0]["epoch"] == 0
    assert results["run"]["granularities"] == ["image", "objects", "caption"]
    for folder in (output_dir, output_dir / "best_model"):
        assert (folder / "model.safetensors").is_file() and (folder / "processor_config.json").is_file()
    assert "| test | lenient |" in (output_dir / "README.md").read_text()
    assert not (output_dir / "checkpoints").exists()
    # The comparison model differs only in reading no granularity: same corpus, seed and schedule.
    assert baseline["run"]["granularities"] == []
    for name in ("synthetic_sizes", "seed", "per_device_train_batch_size", "num_train_epochs"):
        assert baseline["run"]["args"][name] == results["run"]["args"][name]
    assert baseline["training"]["optimizer_steps"] == 2
