"""`mgcm-export-onnx`: write a trained MGCM folder's ONNX files beside its weights.

    mgcm-export-onnx outputs/mgcm            # outputs/mgcm/onnx/model.onnx (+ vision_model.onnx)
    mgcm-export-onnx outputs/mgcm --int8     # also onnx/model_quantized.onnx
    python -m processing.onnx_export outputs/mgcm --int8

The files record a fingerprint of the folder's `model.safetensors` and `config.json`; after retraining, run the
command again (ONNX Runtime refuses files exported from other weights). The export itself is
`modeling_mgcm.onnx_export.export_folder`; `pipeline("multimodal-ner", model=folder, model_kwargs={"runtime":
"onnx"})` and `mgcm-predict --runtime onnx` load the files.
"""

import argparse
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgcm-export-onnx",
        description="Export an MGCM folder to ONNX (onnx/model.onnx, the vision backbone, optionally int8).",
    )
    parser.add_argument(
        "model_dir", type=Path, help="a folder written by examples/train.py or the Hub export"
    )
    parser.add_argument(
        "--int8", action="store_true", help="also write onnx/model_quantized.onnx (dynamic int8)"
    )
    parser.add_argument(
        "--per_tensor",
        action="store_true",
        help="with --int8: one scale per weight matrix instead of one per output column",
    )
    parser.add_argument(
        "--reduce_range",
        action="store_true",
        help="with --int8: 7-bit weights, for x86 CPUs without VNNI where 8-bit products can saturate",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 when the folder cannot be exported)."""
    args = build_parser().parse_args(argv)
    if (args.per_tensor or args.reduce_range) and not args.int8:
        build_parser().error("--per_tensor and --reduce_range go with --int8")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    from modeling_mgcm.onnx_export import export_folder

    try:
        files = export_folder(
            args.model_dir, int8=args.int8, per_channel=not args.per_tensor, reduce_range=args.reduce_range
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"mgcm-export-onnx: cannot export {args.model_dir}: {error}", file=sys.stderr)
        return 1
    for path in files:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
