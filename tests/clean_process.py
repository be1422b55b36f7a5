"""Run a script in a Python process that cannot import this project: the way a Hub user meets an exported
folder (remote code), with only the standard library and site-packages importable."""

import os
import site
import subprocess
import sys
import textwrap
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


# The start of a clean-process script that tags a batch with an exported folder: argv is (exported folder,
# batch JSON file, result safetensors file); it leaves `exported`, `batch`, `result_file`, `model` and
# `processor` defined.
LOAD_EXPORTED_MODEL = textwrap.dedent(
    """
    import json, sys

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForTokenClassification, AutoProcessor

    exported, batch_file, result_file = sys.argv[1:4]
    torch.set_num_threads(1)
    batch = json.load(open(batch_file))
    model = AutoModelForTokenClassification.from_pretrained(exported, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(exported, trust_remote_code=True)
    """
)

# Tags the batch with and without knowledge through the exported remote code.
KNOWLEDGE_TAGGING_SCRIPT = LOAD_EXPORTED_MODEL + textwrap.dedent(
    """
    tensors = {}
    for name, knowledge in (("with", batch["knowledge"]), ("without", [None] * len(batch["knowledge"]))):
        inputs = processor(words=batch["words"], captions=batch["captions"], text_sources={"knowledge": knowledge})
        with torch.no_grad():
            output = model(**{k: v for k, v in inputs.items() if k not in ("overflow_to_sample_mapping", "window_word_offset")})
        tensors[name + ".logits"] = output.logits
        tensors[name + ".knowledge_gate"] = output.gate_values["knowledge"]
    save_file(tensors, result_file)
    print(json.dumps({"model": type(model).__module__, "text_sources": model.config.text_sources}))
    """
)
