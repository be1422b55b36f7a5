"""The measuring parts of `benchmarks/training_cost.py` (the benchmark itself is run by hand): a child's peak
RSS and a failing child's output come back (that the peak is the child's own is tested in
test_predict_load.py), the interleaved step order is fair to every configuration, the summary turns step
times into the right ratios and target verdicts, the configurations are built and stepped with the training
module's arguments, windows and optimizer, and the command line keeps the baseline in every run."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from processing import make_synthetic_corpus
from processing.text.neighbour_search import neighbour_table_from_embeddings

REPO = Path(__file__).resolve().parents[1]
# The benchmark's modules import each other by name, as `python benchmarks/training_cost.py` runs them.
sys.path.insert(0, str(REPO / "benchmarks"))
training_cost = importlib.import_module("training_cost")
cost_configs = importlib.import_module("cost_configs")
cost_memory_children = importlib.import_module("cost_memory_children")
cost_training_steps = importlib.import_module("cost_training_steps")


def test_a_child_s_peak_rss_comes_back_in_mib(tmp_path):
    allocate_80_mib = "block = b'\\x01' * (80 * 2**20)"
    assert (
        80 <= cost_memory_children.child_peak_rss_mib(["-c", allocate_80_mib], tmp_path / "child.log") < 250
    )


def test_a_failing_child_raises_with_its_exit_code_and_output(tmp_path):
    failing = "import sys; print('the child says why', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*the child says why"):
        cost_memory_children.child_peak_rss_mib(["-c", failing], tmp_path / "child.log")


def test_interleaved_schedule_gives_every_config_the_same_batches_in_rotating_rounds():
    names = ["text", "sa", "full"]
    schedule = cost_configs.Schedule(warmup=2, rounds=3, steps_per_round=2)
    steps = cost_training_steps.interleaved_schedule(names, schedule)

    assert len(steps) == len(names) * schedule.total_steps
    for name in names:
        mine = [(position, timed) for step_name, position, timed in steps if step_name == name]
        assert [position for position, _ in mine] == list(range(schedule.total_steps))
        assert [timed for _, timed in mine] == [False] * 2 + [True] * 6
    # Warm-up steps of every configuration come before any timed step.
    first_timed = next(index for index, (_, _, timed) in enumerate(steps) if timed)
    assert all(not timed for _, _, timed in steps[:first_timed]) and first_timed == 2 * len(names)
    # Each timed round starts with a different configuration, a few steps each.
    timed_steps = [name for name, _, timed in steps if timed]
    round_length = len(names) * schedule.steps_per_round
    round_starts = [timed_steps[start] for start in range(0, len(timed_steps), round_length)]
    assert round_starts == ["sa", "full", "text"]
    assert timed_steps[:round_length] == ["sa", "sa", "full", "full", "text", "text"]


def test_summary_ratios_medians_and_target_verdicts():
    def steps(*walls):
        return [{"wall": wall, "cpu": wall / 2, "collate": 0.01} for wall in walls]

    timings = {
        "text": steps(1.0, 1.0, 9.0),  # one step slowed by another process: the median ignores it
        "text+shape+sa": steps(1.3, 1.3, 1.3),
        "full": steps(1.3, 1.35, 1.3),
        "full-caption-grad": steps(1.5, 1.5, 1.5),
    }
    summary = cost_training_steps.summarise_steps(timings, batch_size=16, train_windows=4000)

    assert summary["text"]["median_step_seconds"] == 1.0
    assert summary["text"]["tweets_per_second"] == 16.0
    assert summary["text"]["seconds_per_epoch_derived"] == 250.0
    assert summary["text"]["ratio_to_text"] == 1.0 and summary["text"]["met"] is None
    assert summary["text+shape+sa"]["ratio_to_text"] == pytest.approx(1.3)
    assert summary["text+shape+sa"]["cpu_time_ratio_to_text"] == pytest.approx(1.3)
    assert (summary["text+shape+sa"]["target_ratio"], summary["text+shape+sa"]["met"]) == (1.25, False)
    assert (summary["full"]["target_ratio"], summary["full"]["met"]) == (1.4, True)
    assert (summary["full-caption-grad"]["target_ratio"], summary["full-caption-grad"]["met"]) == (1.4, False)


def test_fixed_batch_order_is_seeded_and_reshuffles_past_one_epoch():
    batches = cost_training_steps.fixed_batch_order(num_rows=10, batch_size=4, num_batches=4)
    assert batches == cost_training_steps.fixed_batch_order(num_rows=10, batch_size=4, num_batches=4)
    assert [len(batch) for batch in batches] == [4, 4, 4, 4]
    flat = [index for batch in batches for index in batch]
    assert sorted(flat[:10]) == list(range(10))  # the first epoch is a permutation
    assert flat[:10] != list(range(10))
    assert cost_training_steps.fixed_batch_order(10, 4, 4, seed=1) != batches


def test_the_command_line_always_times_the_text_baseline_and_refuses_unknown_configs(capsys):
    assert training_cost.parse_args(["--configs", "full"]).configs == ["text", "full"]
    with pytest.raises(SystemExit):
        training_cost.parse_args(["--configs", "fulll"])
    assert "--configs: unknown ['fulll']" in capsys.readouterr().err


def test_a_configuration_is_built_with_train_py_s_defaults_and_takes_finite_steps(tiny_bert_dir, tmp_path):
    corpus = make_synthetic_corpus(12, 0, 0, seed=0)
    words = sorted({word for tokens in corpus["train"]["tokens"] for word in tokens})
    table = neighbour_table_from_embeddings(words, np.random.default_rng(0).normal(size=(len(words), 8)), k=2)
    defaults = cost_training_steps.training_defaults(tmp_path, tiny_bert_dir)
    assert (defaults.learning_rate, defaults.fusion_learning_rate, defaults.crf_learning_rate) == (
        3e-5,
        1e-3,
        1e-2,
    )
    accelerator = Accelerator()

    run = cost_training_steps.build_config_run(
        "full", tiny_bert_dir, corpus, table, defaults, accelerator, num_batches=2
    )

    assert run.processor.url_token == "http" and run.processor.neighbour_table is table
    assert accelerator.unwrap_model(run.model).config.text_sources == ["caption"]
    assert all("caption_input_ids" in row for batch in run.batches for row in batch)
    rates = {group["name"]: group["initial_lr"] for group in run.optimizer.param_groups}
    assert (rates["backbone"], rates["fusion"], rates["crf_no_decay"]) == (3e-5, 1e-3, 1e-2)
    before = [parameter.detach().clone() for parameter in run.model.parameters()]
    for rows in run.batches:
        step = cost_training_steps.training_step(run, rows, accelerator, defaults.max_grad_norm)
        assert step["wall"] >= step["collate"] > 0
    assert any(not torch.equal(old, new) for old, new in zip(before, run.model.parameters(), strict=True))
