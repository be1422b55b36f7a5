"""The training package called in-process (`processing.training`): the command line (every flag's name,
default and meaning, the resolved defaults, the refusals), the libraries' log levels, the window rows of a
corpus, the run's length, and `loop.main` training the synthetic corpus end to end with its text-only
comparison. (Runs of `examples/train.py` in subprocesses: test_train_script.py and
test_interrupted_training.py.)"""

import json
import logging
import sys
from types import SimpleNamespace

import datasets
import pytest
import transformers
from accelerate import Accelerator

from modeling_mgcm import MGCMConfig, MGCMProcessor
from modeling_mgcm.configuration_mgcm import VISUAL_GRANULARITIES
from processing.training import loop
from processing.training.arguments import TrainArguments, build_parser, parse_args
from processing.training.model_building import model_config_kwargs
from processing.training.window_rows import tokenised_windows

TINY_RUN = ["--synthetic", "--synthetic_sizes", "16,8,8", "--seed", "5", "--per_device_train_batch_size", "8"]


# What the argparse command line gave with no flag: the names, defaults and resolved values that
# benchmarks/run_accuracy.sh, the README and the tests rely on.
DEFAULTS = {
    "augmentation_mode": "none",
    "aux_span_loss_weight": 0.5,
    "cache_dir": None,
    "caption_as_text_segment": False,
    "captions_file": None,
    "checkpointing_steps": "epoch",
    "crf_learning_rate": 0.01,
    "dataset_dir": None,
    "drop_text_sources_at_eval": [],
    "final_eval_splits": None,
    "fusion_learning_rate": 0.001,
    "gradient_accumulation_steps": 1,
    "gradient_checkpointing": False,
    "granularities": ["image", "objects", "caption"],
    "image_dir": None,
    "input_dropout": None,
    "input_dropout_rates": {},
    "keep_checkpoints": 2,
    "learning_rate": 0.001,
    "logging_steps": 10,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "max_train_steps": None,
    "mixed_precision": None,
    "no_text_only_baseline": False,
    "no_word_shape": False,
    "num_cross_attention_layers": 1,
    "num_neighbours": 4,
    "num_train_epochs": 12,
    "object_labels_file": None,
    "objects_file": None,
    "output_dir": "outputs/mgcm",
    "per_device_eval_batch_size": 64,
    "per_device_train_batch_size": 16,
    "repair_bio": False,
    "resume_from_checkpoint": None,
    "seed": 42,
    "segment_sources": [],
    "share_text_source_block": False,
    "stride": 16,
    "synthetic": True,
    "synthetic_sizes": "600,200,200",
    "text_model": None,
    "text_source": None,
    "text_source_as_segment": None,
    "text_source_files": {},
    "text_source_lengths": {},
    "text_source_max_length": None,
    "text_source_origin": None,
    "text_source_gradient": False,
    "text_source_origins": {},
    "url_token": None,
    "vision_model": None,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "with_tracking": False,
    "word_vectors": None,
}


def test_every_flag_keeps_its_name_and_default():
    assert vars(parse_args([])) == DEFAULTS


def test_every_flag_keeps_its_meaning():
    """Each flag set away from its default (the repeatable ones twice) reads as the argparse command line
    read it."""
    argv = [
        *("--dataset_dir", "d", "--image_dir", "i", "--captions_file", "c.txt"),
        *("--text_source", "knowledge=k.txt", "--text_source", "other=o.txt"),
        *(
            "--text_source_origin",
            "knowledge=PGIM",
            "--objects_file",
            "o.json",
            "--object_labels_file",
            "l.txt",
        ),
        *("--repair_bio", "--synthetic_sizes", "1,2,3", "--text_model", "enc", "--vision_model", "vis"),
        *(
            "--word_vectors",
            "g",
            "--num_neighbours",
            "2",
            "--granularities",
            "image,objects,caption,knowledge",
        ),
        *("--text_source_max_length", "knowledge=200", "--text_source_as_segment", "other"),
        *("--share_text_source_block", "--input_dropout", "knowledge=0.5", "--augmentation_mode", "add"),
        *("--text_source_gradient", "--num_cross_attention_layers", "2"),
        *("--no_word_shape", "--aux_span_loss_weight", "0", "--gradient_checkpointing", "--max_length", "64"),
        *("--stride", "8", "--url_token", "http", "--num_train_epochs", "3", "--max_train_steps", "7"),
        *(
            "--per_device_train_batch_size",
            "8",
            "--per_device_eval_batch_size",
            "3",
            "--learning_rate",
            "0.1",
        ),
        *("--fusion_learning_rate", "0.2", "--crf_learning_rate", "0.3", "--warmup_ratio", "0"),
        *("--weight_decay", "0", "--max_grad_norm", "0", "--gradient_accumulation_steps", "2"),
        *("--mixed_precision", "bf16", "--seed", "5", "--output_dir", "o", "--cache_dir", "c"),
        *("--checkpointing_steps", "4", "--keep_checkpoints", "1", "--resume_from_checkpoint", "latest"),
        *("--with_tracking", "--logging_steps", "3", "--final_eval_splits", "valid,test"),
        *("--drop_text_sources_at_eval", "knowledge", "--no_text_only_baseline"),
    ]
    changed = {
        "augmentation_mode": "add",
        "aux_span_loss_weight": 0.0,
        "cache_dir": "c",
        "captions_file": "c.txt",
        "checkpointing_steps": "4",
        "crf_learning_rate": 0.3,
        "dataset_dir": "d",
        "drop_text_sources_at_eval": ["knowledge"],
        "final_eval_splits": "valid,test",
        "fusion_learning_rate": 0.2,
        "gradient_accumulation_steps": 2,
        "gradient_checkpointing": True,
        "granularities": ["image", "objects", "caption", "knowledge"],
        "image_dir": "i",
        "input_dropout": ["knowledge=0.5"],
        "input_dropout_rates": {"knowledge": 0.5},
        "keep_checkpoints": 1,
        "learning_rate": 0.1,
        "logging_steps": 3,
        "max_grad_norm": 0.0,
        "max_length": 64,
        "max_train_steps": 7,
        "mixed_precision": "bf16",
        "no_text_only_baseline": True,
        "no_word_shape": True,
        "num_cross_attention_layers": 2,
        "num_neighbours": 2,
        "num_train_epochs": 3,
        "object_labels_file": "l.txt",
        "objects_file": "o.json",
        "output_dir": "o",
        "per_device_eval_batch_size": 3,
        "per_device_train_batch_size": 8,
        "repair_bio": True,
        "resume_from_checkpoint": "latest",
        "seed": 5,
        "segment_sources": ["other"],
        "share_text_source_block": True,
        "stride": 8,
        "synthetic": False,
        "synthetic_sizes": "1,2,3",
        "text_model": "enc",
        "text_source": ["knowledge=k.txt", "other=o.txt"],
        "text_source_as_segment": ["other"],
        "text_source_files": {"caption": "c.txt", "knowledge": "k.txt", "other": "o.txt"},
        "text_source_lengths": {"knowledge": 200},
        "text_source_max_length": ["knowledge=200"],
        "text_source_origin": ["knowledge=PGIM"],
        "text_source_gradient": True,
        "text_source_origins": {"knowledge": "PGIM"},
        "url_token": "http",
        "vision_model": "vis",
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "with_tracking": True,
        "word_vectors": "g",
    }
    assert vars(parse_args(argv)) == DEFAULTS | changed
    # The two flags left: --synthetic wins over --dataset_dir, --caption_as_text_segment makes a segment.
    args = parse_args(["--synthetic", "--dataset_dir", "d", "--caption_as_text_segment", "--granularities="])
    assert (args.synthetic, args.segment_sources, args.granularities) == (True, ["caption"], [])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--logging_steps", "0"], "--logging_steps must be at least 1, got 0"),
        (["--num_cross_attention_layers", "0"], "--num_cross_attention_layers must be at least 1, got 0"),
        (
            ["--checkpointing_steps", "often"],
            "--checkpointing_steps takes 'epoch', 'no' or a number of steps",
        ),
        (["--augmentation_mode", "gate"], "--augmentation_mode gate needs --word_vectors"),
        (["--augmentation_mode", "bogus"], "invalid choice: 'bogus' (choose from 'none', 'add', 'gate'"),
        (["--num_train_epochs", "x"], "--num_train_epochs/--num-train-epochs: invalid int value: 'x'"),
        (["--input_dropout", "caption=x"], "--input_dropout 'caption=x': 'x' is not a valid value"),
        (["--dataset_dir", "d", "--granularities", "image"], "image granularity on a real corpus needs"),
        (["--drop_text_sources_at_eval", "nope"], "--drop_text_sources_at_eval names ['nope']"),
        (["--learning_rte", "0.1"], "unrecognized arguments: --learning_rte 0.1"),
    ],
)
def test_a_bad_flag_value_exits_with_the_usage_and_a_message_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: ") and message in error


def test_the_arguments_check_themselves_when_built_in_code():
    """`TrainArguments` is the command line's object: built directly, it resolves and checks the same way."""
    args = TrainArguments(text_model="encoder", granularities="caption")
    assert (args.learning_rate, args.granularities, args.synthetic) == (3e-5, ["caption"], True)
    with pytest.raises(ValueError, match="--text_source takes NAME=VALUE, got 'knowledge'"):
        TrainArguments(text_source=["knowledge"])


def test_help_shows_the_description_and_the_flag_groups_with_their_defaults():
    text = build_parser().format_help()
    assert "Train MGCM for multimodal NER with Accelerate" in text
    assert "--dataset_dir ../shared/data/twitter2015 \\\n" in text
    positions = [text.index(f"\n{group}:\n") for group in ("data", "model", "optimisation", "run")]
    assert positions == sorted(positions)
    assert (
        positions[1]
        < text.index("\n  --text_model ")
        < positions[2]
        < positions[3]
        < text.index("\n  --seed ")
    )
    assert "(default: 600,200,200)" in text and "(default: None)" not in text


@pytest.mark.parametrize("main_process, level", [(True, logging.WARNING), (False, logging.ERROR)])
def test_library_logs_are_warnings_on_the_main_process_and_errors_elsewhere(main_process, level):
    before = transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity()
    try:
        loop.configure_logging(SimpleNamespace(is_local_main_process=main_process))
        assert transformers.utils.logging.get_verbosity() == level
        assert datasets.utils.logging.get_verbosity() == level
        assert logging.getLogger().level == logging.INFO
        for name in loop.NOISY_LOGGERS:
            assert logging.getLogger(name).level == logging.WARNING
    finally:
        transformers.utils.logging.set_verbosity(before[0])
        datasets.utils.logging.set_verbosity(before[1])


def test_the_synthetic_defaults_read_every_granularity_at_the_tiny_encoders_rates():
    args = parse_args([])
    assert args.synthetic and args.granularities == [*VISUAL_GRANULARITIES, "caption"]
    assert (args.learning_rate, args.fusion_learning_rate, args.crf_learning_rate) == (1e-3, 1e-3, 1e-2)
    assert (args.num_train_epochs, args.augmentation_mode, args.segment_sources) == (12, "none", [])


def test_the_model_flags_set_the_config_fields_they_name():
    args = parse_args(
        ["--text_source_gradient", "--num_cross_attention_layers", "2", "--share_text_source_block"]
    )
    fields = model_config_kwargs(args, neighbour_table=None, object_labels=["person"])
    assert fields["detach_text_source_encoding"] is False and fields["num_cross_attention_layers"] == 2
    assert fields["share_text_source_block"] is True and fields["text_sources"] == ["caption"]
    defaults = model_config_kwargs(parse_args([]), neighbour_table=None, object_labels=["person"])
    assert defaults["detach_text_source_encoding"] is True and defaults["num_cross_attention_layers"] == 1


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
        "epoch_train_seconds": 0.0,
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
