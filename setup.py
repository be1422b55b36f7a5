"""Installs mgcm: the `modeling_mgcm` model package and the `processing` data/inference package."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")
ONNX = ["onnxruntime>=1.20", "onnx>=1.17", "onnxscript>=0.5"]

setup(
    name="mgcm",
    version="0.1.0",
    description="Multi-granularity cross-modality NER for social media (MGCM), Hugging Face native",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_mgcm", "processing", "processing.*"]),
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24",  # activation_checkpointing_enable
        "datasets>=4.0",  # the List feature
        "accelerate>=1.0",
        "huggingface_hub>=1.31",  # imported directly: Hub export, model and dataset cards
        "seqeval>=1.2.2",
        "pillow>=10.0",
        "safetensors>=0.4.3",
        "numpy>=1.24",
        "tqdm>=4.60",
    ],
    extras_require={
        "explain": ["matplotlib>=3.7"],
        # ONNX Runtime inference, and the export: torch.onnx's exporter needs onnx and onnxscript.
        "onnx": ONNX,
        "test": [
            "pytest>=8.0",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "matplotlib>=3.7",
            "tensorboard>=2.14",
            *ONNX,
        ],
    },
    entry_points={
        "console_scripts": [
            "mgcm-predict = processing.predict_cli:main",
            "mgcm-export-onnx = processing.onnx_export:main",
        ]
    },
)
