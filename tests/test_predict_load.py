"""A small CI version of the `mgcm-predict` load test (`benchmarks/predict_load.py` runs 2,000 and 20,000
posts): one run over a mix of good, missing, corrupt and absent images and lines that are not JSON, in its own
process, checked for one output line per input line in order, summary counts that add up, and a peak RSS that
stops growing once the first chunks are done. The peak is that process's own, not the pytest process's
(`predict_load.start_measured`)."""

import importlib.util
import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("predict_load", REPO / "benchmarks" / "predict_load.py")
predict_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(predict_load)

NUM_POSTS, EARLY_POSTS, CHUNK_SIZE = 900, 300, 50


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM line")


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_the_measured_peak_is_the_child_s_own_not_its_larger_parent_s(tmp_path):
    # Hold this process's peak well above a bare Python's: a child started straight from it would report this
    # peak as its own (Linux keeps the peak of the memory a process leaves at exec).
    touched = b"\x01" * (256 * 2**20)
    del touched
    assert peak_rss_mib(os.getpid()) >= 256
    environment = predict_load.predict_environment()
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        bare = predict_load.start_measured(["-c", "pass"], stderr_file, environment)
        failing = predict_load.start_measured(["-c", "import sys; sys.exit(3)"], stderr_file, environment)
        bare_status, bare_peak = predict_load.finish_measured(bare)
        failing_status, _ = predict_load.finish_measured(failing)
    assert bare_status == 0 and failing_status == 3
    assert bare_peak < 100, bare_peak


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_predict_streams_posts_in_bounded_memory_one_output_line_per_input_line(tiny_mgcm_dir, tmp_path):
    posts, output = tmp_path / "posts.jsonl", tmp_path / "predictions.jsonl"
    counts = predict_load.write_posts(posts, NUM_POSTS, tmp_path / "images", bad_line_every=200)
    assert counts["bad_lines"] == 4 and counts["missing"] and counts["corrupt"] and counts["none"]
    arguments = predict_load.predict_arguments(tiny_mgcm_dir, posts, output, CHUNK_SIZE, batch_size=16)
    environment = predict_load.predict_environment({"OMP_NUM_THREADS": "1"})
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        process = predict_load.start_measured(arguments, stderr_file, environment)
        early_peak, deadline = None, time.monotonic() + 300
        while process.launcher.poll() is None:
            if early_peak is None and count_lines(output) >= EARLY_POSTS:
                early_peak = peak_rss_mib(process.pid)
            if time.monotonic() > deadline:
                predict_load.kill_measured(process)
                pytest.fail("mgcm-predict took more than 300 s")
            time.sleep(0.05)
        exit_status, final_peak = predict_load.finish_measured(process)
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    assert exit_status == 0, stderr[-3000:]
    summary = predict_load.parse_summary(stderr)
    assert predict_load.check_outputs(posts, output, counts, summary) == []
    assert (summary["posts"], summary["errors"]) == (NUM_POSTS, counts["bad_lines"])
    assert summary["masked_images"] == counts["missing"] + counts["corrupt"]
    # Memory is bounded by the chunk, not the input: the peak after 300 posts is the peak after 900.
    assert early_peak is not None, "the run ended before its early peak could be read"
    # Shown with `pytest -rP`, to follow the figures across CI runs.
    print(
        f"mgcm-predict peak RSS: {early_peak:.1f} MiB after {EARLY_POSTS} posts, {final_peak:.1f} MiB after {NUM_POSTS}"
    )
    assert final_peak <= 1.10 * early_peak, (early_peak, final_peak)
