"""A small CI version of the `mgcm-predict` load test (`benchmarks/predict_load.py` runs 2,000 and 20,000
posts): one run over a mix of good, missing, corrupt and absent images and lines that are not JSON, in its own
process, checked for one output line per input line in order, summary counts that add up, and a peak RSS that
stops growing once the first chunks are done."""

import importlib.util
import os
import shutil
import subprocess
import sys
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
@pytest.mark.xfail(
    strict=False,
    reason="open: in full-suite runs the peak after 900 posts is ~30% above the peak after 300 "
    "(alone the test passes); under investigation, see issue 7",
)
def test_predict_streams_posts_in_bounded_memory_one_output_line_per_input_line(tiny_mgcm_dir, tmp_path):
    posts, output = tmp_path / "posts.jsonl", tmp_path / "predictions.jsonl"
    counts = predict_load.write_posts(posts, NUM_POSTS, tmp_path / "images", bad_line_every=200)
    assert counts["bad_lines"] == 4 and counts["missing"] and counts["corrupt"] and counts["none"]
    model_dir = shutil.copytree(tiny_mgcm_dir, tmp_path / "model")
    command = [sys.executable, "-m", "processing.predict_cli", "--model", str(model_dir)]
    command += ["--input", str(posts), "--output", str(output), "--chunk_size", str(CHUNK_SIZE)]
    command += ["--batch_size", "16", "--no_progress"]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with open(tmp_path / "stderr.txt", "wb") as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr_file, env=environment)
        early_peak, deadline = None, time.monotonic() + 300
        while True:
            # wait4 reaps the process when it has ended, with the kernel's count of its peak RSS.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if early_peak is None and count_lines(output) >= EARLY_POSTS:
                early_peak = peak_rss_mib(process.pid)
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("mgcm-predict took more than 300 s")
            time.sleep(0.05)
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, stderr[-3000:]
    summary = predict_load.parse_summary(stderr)
    assert predict_load.check_outputs(posts, output, counts, summary) == []
    assert (summary["posts"], summary["errors"]) == (NUM_POSTS, counts["bad_lines"])
    assert summary["masked_images"] == counts["missing"] + counts["corrupt"]
    # Memory is bounded by the chunk, not the input: the peak after 300 posts is the peak after 900.
    assert early_peak is not None, "the run ended before its early peak could be read"
    final_peak = usage.ru_maxrss / 1024
    assert final_peak <= 1.10 * early_peak, (early_peak, final_peak)
