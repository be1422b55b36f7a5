"""Refusing pickle weights: loading a local folder must never unpickle a file, since unpickling can run code."""

import json
import os
from pathlib import Path

from transformers import PreTrainedConfig
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME


def _with_variant(file_name: str, variant: str | None) -> str:
    if not variant:
        return file_name
    stem, _, suffix = file_name.partition(".")
    return f"{stem}.{variant}.{suffix}"


def refuse_pickle_weights(
    pretrained_model_name_or_path: str | os.PathLike,
    subfolder: str = "",
    variant: str | None = None,
    config: object = None,
) -> None:
    """Raise `OSError` if loading this local folder would unpickle a weights file.

    transformers 5 falls back to `pytorch_model.bin` when there is no safetensors file, and reads any file
    that `config.json`'s `transformers_weights` or a safetensors index's `weight_map` names, whatever
    `use_safetensors` says; unpickling can run code, so each of these is refused. Hub ids are left to
    `use_safetensors=True`, which refuses a repository without safetensors weights.
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
    safe_names = [_with_variant(name, variant) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)]
    pickle_names = [_with_variant(name, variant) for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)]
    if named is None and not any((folder / name).is_file() for name in safe_names):
        found = [name for name in pickle_names if (folder / name).is_file()]
        if found:
            raise OSError(
                f"{folder} holds only pickle weights ({', '.join(found)}) and no {safe_names[0]}; "
                f"MGCM loads safetensors only because unpickling can run code: {opt_in}"
            )


__all__ = ["refuse_pickle_weights"]
