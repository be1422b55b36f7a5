"""The measuring parts of `benchmarks/training_cost.py` (the benchmark itself is run by hand): a child's peak
RSS and a failing child's output come back (that the peak is the child's own is tested in
test_predict_load.py), the interleaved step order is fair to every configuration, and the summary turns step
times into the right ratios and target verdicts."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("training_cost", REPO / "benchmarks" / "training_cost.py")
training_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training_cost)


def test_a_child_s_peak_rss_comes_back_in_mib(tmp_path):
    allocate_80_mib = "block = b'\\x01' * (80 * 2**20)"
    assert 80 <= training_cost.child_peak_rss_mib(["-c", allocate_80_mib], tmp_path / "child.log") < 250


def test_a_failing_child_raises_with_its_exit_code_and_output(tmp_path):
    failing = "import sys; print('the child says why', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*the child says why"):
        training_cost.child_peak_rss_mib(["-c", failing], tmp_path / "child.log")


def test_interleaved_schedule_gives_every_config_the_same_batches_in_rotating_rounds():
    names = ["text", "sa", "full"]
    schedule = training_cost.Schedule(warmup=2, rounds=3, steps_per_round=2)
    steps = training_cost.interleaved_schedule(names, schedule)

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
    summary = training_cost.summarise_steps(timings, batch_size=16, train_windows=4000)

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
    batches = training_cost.fixed_batch_order(num_rows=10, batch_size=4, num_batches=4)
    assert batches == training_cost.fixed_batch_order(num_rows=10, batch_size=4, num_batches=4)
    assert [len(batch) for batch in batches] == [4, 4, 4, 4]
    flat = [index for batch in batches for index in batch]
    assert sorted(flat[:10]) == list(range(10))  # the first epoch is a permutation
    assert flat[:10] != list(range(10))
    assert training_cost.fixed_batch_order(10, 4, 4, seed=1) != batches
