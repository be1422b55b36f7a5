#!/usr/bin/env python
"""Turn a trained MGCM folder (the `output_dir` of `examples/train.py`) into a Hub-ready folder.

    python examples/export_to_hub.py outputs/mgcm hub/mgcm-twitter2017
    python examples/export_to_hub.py outputs/mgcm hub/mgcm-twitter2017 \
        --card_template hub_configs/mgcm-offline-minilm/README.md --push_to_hub user/mgcm-twitter2017
    python examples/export_to_hub.py outputs/t17-minilm hub/mgcm-t17 \
        --base_model sentence-transformers/all-MiniLM-L6-v2    # the run's encoder was a local folder

The exported folder holds the weights (safetensors), `config.json` with an `auto_map` for `AutoConfig`,
`AutoModel` and `AutoModelForTokenClassification` and the "multimodal-ner" pipeline in `custom_pipelines`,
the processor (tokenizer, `processor_config.json` with an `auto_map` for `AutoProcessor`, the neighbour
table), the code of `modeling_mgcm/` that they need, `results.json` and a model card filled from it (Hub
metadata with the valid/test F1, the dataset and the base model; no path of the training machine).
`pipeline(model=folder, trust_remote_code=True)` tags posts with it where mgcm is not installed. The training
folder's fresh ONNX files (`mgcm-export-onnx`) are copied along; `--onnx` (`--int8`) exports them here. The
export itself is `processing.training.hub_export.export_to_hub`.
"""

import argparse
import logging
import sys
from pathlib import Path

from processing.training.hub_export import ExportError, export_to_hub, push_folder_to_hub


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="output_dir of examples/train.py")
    parser.add_argument("output_dir", type=Path, help="the Hub-ready folder to write (new or empty)")
    parser.add_argument(
        "--card_template", type=Path, help="model-card template, e.g. hub_configs/<name>/README.md"
    )
    parser.add_argument(
        "--base_model",
        action="append",
        metavar="HUB_ID",
        help="Hub id of a model the run started from, for the card's base_model; repeat for several "
        "(default: the template's, else the run's --text_model/--vision_model where they are Hub ids; a "
        "local folder is left out)",
    )
    parser.add_argument(
        "--dataset_name",
        help="the dataset the card names: a Hub dataset id or a name (default: Twitter-2015/Twitter-2017 "
        "from the training corpus folder's name, else that folder's name)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="export the ONNX files into the folder (default: copy the training folder's, when they are fresh)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also the int8 ONNX file onnx/model_quantized.onnx (implies --onnx)",
    )
    parser.add_argument(
        "--push_to_hub", metavar="REPO_ID", help="upload the folder to this Hub model repository"
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push_to_hub: create a private repository"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        folder = export_to_hub(
            args.model_dir,
            args.output_dir,
            args.card_template,
            args.push_to_hub,
            base_model=args.base_model,
            dataset_name=args.dataset_name,
            export_onnx=args.onnx,
            int8=args.int8,
        )
        print(f"exported {args.model_dir} to {folder}")
        if args.push_to_hub:
            print(f"uploaded: {push_folder_to_hub(folder, args.push_to_hub, args.private)}")
    except ExportError as error:
        sys.exit(f"export_to_hub: {error}")


if __name__ == "__main__":
    main()
