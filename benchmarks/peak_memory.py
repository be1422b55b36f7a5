"""Peak resident memory (RSS) of a child process, measured as its own and not its parent's.

Used by `predict_load.py` and `training_cost.py`. Linux keeps a process's peak RSS across exec, and a child that
`subprocess` starts straight from a large parent (pytest, a benchmark that has trained models) would report
the parent's peak; here the child starts from a launcher that imports only `os` and `sys`.
"""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# A measured process is started from this small Python, which reports the process's id, then its exit status and
# the kernel's count of its peak RSS (KiB). Started straight from the caller, that count would be the caller's
# peak whenever that is larger: at exec, Linux keeps the peak RSS of the memory the process leaves, and a
# process started with `subprocess` leaves its parent's memory (vfork shares it, high-water mark included;
# fork copies it). A pytest process that has trained models is far larger than `mgcm-predict`; this launcher,
# which imports only `os` and `sys`, is far smaller.
MEASURING_LAUNCHER = """
import os, sys
child = os.fork()
if child == 0:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    finally:
        os._exit(127)
print(child, flush=True)
_, status, usage = os.wait4(child, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, flush=True)
"""


@dataclass
class MeasuredProcess:
    """A Python process started by `start_measured`: `pid` is its id, `launcher` the process reporting on it."""

    launcher: subprocess.Popen
    pid: int


def start_measured(
    arguments: list[str], stderr: IO[bytes] | int, environment: dict[str, str]
) -> MeasuredProcess:
    """Start `python *arguments` (standard output discarded, standard error to `stderr`) such that its peak RSS
    is its own, not its parent's (see `MEASURING_LAUNCHER`)."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", MEASURING_LAUNCHER, *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=environment,
        text=True,
    )
    first_line = launcher.stdout.readline()
    if not first_line.strip().isdigit():
        launcher.kill()
        launcher.wait()
        raise RuntimeError(f"the measuring launcher did not start {arguments}: it printed {first_line!r}")
    return MeasuredProcess(launcher, int(first_line))


def finish_measured(process: MeasuredProcess) -> tuple[int, float]:
    """Wait for a process started by `start_measured`; its exit status and peak RSS in MiB (the kernel's
    count, including its last moments)."""
    report = process.launcher.stdout.read()
    process.launcher.wait()
    process.launcher.stdout.close()
    fields = report.split()
    if len(fields) != 2 or process.launcher.returncode != 0:
        raise RuntimeError(
            f"the measuring launcher of process {process.pid} ended with status {process.launcher.returncode} "
            f"and reported {report!r}, expected '<exit status> <peak RSS KiB>'"
        )
    return int(fields[0]), int(fields[1]) / 1024  # Linux counts KiB


def kill_measured(process: MeasuredProcess) -> None:
    """Stop a process started by `start_measured` and its launcher."""
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.launcher.wait()
    process.launcher.stdout.close()


def run_measured(
    arguments: list[str], log_path: Path, environment: dict[str, str] | None = None
) -> tuple[int, float]:
    """Run `python *arguments` to its end, standard error to `log_path`; its exit status and peak RSS in MiB."""
    with open(log_path, "wb") as log:
        process = start_measured(arguments, log, dict(os.environ) if environment is None else environment)
        return finish_measured(process)


def own_peak_rss_mib() -> float | None:
    """This process's peak RSS from /proc (VmHWM, Linux), a cross-check of the launcher's figure; else None."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


__all__ = [
    "MEASURING_LAUNCHER",
    "MeasuredProcess",
    "finish_measured",
    "kill_measured",
    "own_peak_rss_mib",
    "run_measured",
    "start_measured",
]
