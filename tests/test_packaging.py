"""The installed package holds every module of the source tree, subpackages included (not only editable)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_setup_installs_every_module_of_both_packages(tmp_path):
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    listed = set((tmp_path / "mgcm.egg-info" / "SOURCES.txt").read_text(encoding="utf-8").split())
    sources = {
        path.relative_to(REPO).as_posix()
        for package in ("modeling_mgcm", "processing")
        for path in (REPO / package).rglob("*.py")
    }
    assert "processing/training/loop.py" in sources
    assert sources - listed == set()
