"""Refusing pickle weights: loading a local folder must never unpickle a file, since unpickling can run code."""

import json
import os
from pathlib import Path

from transformers import PreTrainedConfig


def refuse_pickle_weights(
    pretrained_model_name_or_path: str | os.PathLike,
    subfolder: str = "",
    config: object = None,
) -> None:
    """Raise `OSError` if loading this local folder would unpickle a weights file despite `use_safetensors=True`.

    transformers 5.24 with `use_safetensors=True` already refuses a folder holding only `pytorch_model.bin`
    (or its index), and a `config.json` whose `transformers_weights` names any pickle file but one. Two files
    still get unpickled (with torch's restricted loader): `transformers_weights: "adapter_model.bin"`, and
    whatever a safetensors index's `weight_map` names. This checks those two. Hub ids are left to
    transformers.
    """
    folder = Path(pretrained_model_name_or_path) / (subfolder or "")
    if not folder.is_dir():
        return
    opt_in = "convert the weights to safetensors, or pass use_safetensors=False if you trust the file"
    if isinstance(config, PreTrainedConfig):
        named = getattr(config, "transformers_weights", None)
    elif config is None and (folder / "config.json").is_file():
        try:
            named = json.loads((folder / "config.json").read_text(encoding="utf-8")).get(
                "transformers_weights"
            )
        except (ValueError, AttributeError):
            named = None  # transformers reports the broken config itself
    else:
        named = None
    if isinstance(named, str) and not named.endswith((".safetensors", ".safetensors.index.json")):
        raise OSError(
            f"{folder / 'config.json'}: transformers_weights names {named!r}, a pickle file that loading would "
            f"unpickle; MGCM loads safetensors only: {opt_in}"
        )
    for index_file in sorted(folder.glob("*.safetensors.index.json")):
        try:
            shard_files = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # transformers reports a malformed index itself
        unsafe = sorted(str(name) for name in shard_files if not str(name).endswith(".safetensors"))
        if unsafe:
            raise OSError(
                f"{index_file}: weight_map lists {unsafe[:3]}, files that loading would unpickle; "
                f"MGCM loads safetensors only: {opt_in}"
            )


__all__ = ["refuse_pickle_weights"]
