"""Run a script in a Python process that cannot import this project: the way a Hub user meets an exported
folder (remote code), with only the standard library and site-packages importable."""

import os
import site
import subprocess
import sys
from pathlib import Path

# Prepended to every script: -I -S give a sys.path without site-packages and without this project's editable
# install (a .pth hook, which only `site` reads); the parent's site-packages folders come back as plain
# folders, and nothing else. They come from the parent: in a virtual environment `sysconfig` here would name
# the base interpreter's site-packages, where the environment's packages are not.
_PREAMBLE = """\
import os, sys
for folder in os.environ["MGCM_TEST_SITE_PACKAGES"].split(os.pathsep):
    if folder not in sys.path:
        sys.path.append(folder)
for name in ("processing", "modeling_mgcm"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"the project package {name} is importable in the clean process")
"""


def run_clean_script(script: str, arguments: list[str], work_dir: Path, timeout: int = 180):
    """Run `script` (Python source) with `arguments` in a clean process whose current folder is `work_dir`
    and whose dynamic-module cache is `work_dir/modules`; returns the `CompletedProcess`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    script_path = work_dir / "clean_script.py"
    script_path.write_text(_PREAMBLE + script, encoding="utf-8")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS"))
    }
    environment.update(
        HF_MODULES_CACHE=str(work_dir / "modules"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MGCM_TEST_SITE_PACKAGES=os.pathsep.join(site.getsitepackages()),
    )
    return subprocess.run(
        [sys.executable, "-I", "-S", str(script_path), *arguments],
        cwd=work_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
