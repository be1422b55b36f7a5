"""Write the ready-made MGCM configurations of `hub_configs/`: for each, `config.json` (an `MGCMConfig`),
`processor_config.json` (`MGCMProcessor` settings) and `README.md` (a model-card template).

The files are generated from `MGCMConfig` itself, so that they stay in sync with it:

    python hub_configs/make_hub_configs.py            # rewrite the folders next to this script
    python hub_configs/make_hub_configs.py --check    # exit 1 if a committed file is out of date

The card templates hold `{{ results_table }}`, `{{ training_summary }}` and `{{ repo_id }}`, which
`examples/export_to_hub.py --card_template` (`processing.training.hub_export`) fills from a run's
`results.json`. Their Hub metadata is a `huggingface_hub.ModelCardData` (`model_card.base_card_data`: licence,
language, tags, the base models and the corpus); the export adds the run's scores to it.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, ConvNextImageProcessorPil

from modeling_mgcm import COCO_OBJECT_LABELS, MGCMConfig
from processing.training.hub_export import example_post
from processing.training.model_card import base_card_data, card_text

HUB_CONFIGS_DIR = Path(__file__).resolve().parent
CONFIG_FILE, PROCESSOR_FILE, CARD_FILE = "config.json", "processor_config.json", "README.md"

# The architecture fields of the published text encoders (their Hub `config.json`, minus bookkeeping such as
# `_name_or_path` and `transformers_version`); the weights are not needed to describe the model.
ALL_MINILM_L6_V2 = {
    "model_type": "bert",
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
ALL_MPNET_BASE_V2 = {
    "model_type": "mpnet",
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "relative_attention_num_buckets": 32,
    "vocab_size": 30527,
}

# microsoft/resnet-152's preprocessing: shortest edge to 256 (224 / crop_pct), centre crop 224, ImageNet
# statistics; UMT and the MGCM release resize to 256 and crop 224 too (centre crop at evaluation).
RESNET_152_IMAGE_PROCESSING = {
    "size": {"shortest_edge": 224},
    "crop_pct": 0.875,
    "resample": 3,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}

# The folder `MGCMProcessor.save_pretrained` writes the neighbour table to; a trained model ships it there.
NEIGHBOUR_TABLE_FOLDER = "neighbour_table"


@dataclass(frozen=True)
class HubConfiguration:
    """One ready-made configuration: the model config, the processor settings and the card's text."""

    name: str
    title: str
    config: MGCMConfig
    processor_settings: dict
    description: str
    train_command: str
    # Hub ids of the pretrained models the configuration starts from; the corpus it is for, by the id the
    # cards give it (`model_card.TWEET_CORPORA`).
    base_model: tuple[str, ...]
    datasets: tuple[str, ...] = ()
    published_results: str = ""


def processor_settings(
    object_labels: list[str] | None, image_processing: dict | None, max_length: int, url_token: str | None
) -> dict:
    """`processor_config.json` as `MGCMProcessor.save_pretrained` writes it (the keys of `MGCMProcessor.to_dict`).

    `url_token` "http" feeds links to the encoder as one word, as the offline benchmarks train (BENCHMARKS.md);
    the paper configurations keep links as they are."""
    image_processor = None
    if image_processing is not None:
        image_processor = ConvNextImageProcessorPil(**image_processing).to_dict()
        # JSON has no tuples: written as the lists a reloaded processor reads back.
        image_processor = json.loads(json.dumps(image_processor))
    return {
        "object_labels": object_labels,
        "max_length": max_length,
        "stride": 16,
        "max_objects": 5,
        "text_source_max_lengths": {"caption": 32},
        "segment_sources": [],
        "url_token": url_token,
        "neighbour_table": NEIGHBOUR_TABLE_FOLDER,
        "image_processor": image_processor,
        "processor_class": "MGCMProcessor",
    }


PAPER_DESCRIPTION = """\
The configuration of the MGCM paper (Liu et al. 2022, arXiv:2210.14163): a `bert-base-cased` text encoder,
a frozen `microsoft/resnet-152` giving a 7x7 grid of 2048-d region features, up to 5 detected objects per
image as COCO class ids (80 classes), and gated semantic augmentation with the k=4 nearest neighbours of each
word in a 200-d word-vector space. Image and object granularities are on; the caption granularity and the
word-shape feature are off. Tweets are encoded in windows of 64 word pieces (the paper's limit); longer tweets
are split into overlapping windows, so every word is tagged."""

OFFLINE_DESCRIPTION = """\
The configuration this project trains without any image: a sentence-embedding encoder (`{encoder}`) as text
encoder, gated semantic augmentation with the k=4 nearest neighbours of each word among the GloVe 6B 50-d
vectors, the caption granularity (one image caption per post, e.g. the BLIP-2 captions of both corpora) and
the word-shape feature (the encoder is uncased: capitalisation, `@`, `#` and URLs come in through it). The
image and object granularities are off, so the model needs no vision backbone and no object detector. Links
reach the encoder as the one word `http` (the processor's `url_token`), which nearly halves the word pieces
of a tweet."""

# The paper's test scores (seqeval micro, lenient), for comparison with a run's results.
PUBLISHED_RESULTS = {
    "2015": {"P": 73.57, "R": 75.59, "F1": 74.57, "PER": 85.84, "LOC": 82.03, "ORG": 63.08, "MISC": 40.81},
    "2017": {"P": 86.03, "R": 86.16, "F1": 86.09, "PER": 90.82, "LOC": 86.21, "ORG": 86.26, "MISC": 66.88},
}

LABEL_NOTE = """\
Labels: the 9 BIO tags of PER, LOC, ORG and MISC (`O, B-PER, I-PER, B-LOC, I-LOC, B-ORG, I-ORG, B-MISC,
I-MISC`). Twitter-2015 and Twitter-2017 use the same label set once Twitter-2015's `OTHER` is read as `MISC`
(the corpus loader does this), so the Twitter-2015 and Twitter-2017 configurations are the same model
configuration; they differ in the data they are trained on."""


def published_results_table(corpus: str) -> str:
    """The paper's Twitter-`corpus` test scores as a Markdown paragraph and table."""
    scores = PUBLISHED_RESULTS[corpus]
    names = list(scores)
    header = "| " + " | ".join(names) + " |"
    rule = "|" + "---|" * len(names)
    row = "| " + " | ".join(f"{scores[name]:.2f}" for name in names) + " |"
    return (
        f"The paper reports, on the Twitter-{corpus} test split (seqeval lenient, %):\n\n"
        f"{header}\n{rule}\n{row}\n\n"
    )


def paper_configuration(corpus: str) -> HubConfiguration:
    """The paper's configuration, for the Twitter-2015 or Twitter-2017 corpus (`corpus` = "2015" / "2017")."""
    folder = f"twitter{corpus}"
    return HubConfiguration(
        name=f"mgcm-paper-twitter{corpus}",
        title=f"MGCM, paper configuration, Twitter-{corpus}",
        # The defaults of MGCMConfig are the paper's configuration.
        config=MGCMConfig(),
        processor_settings=processor_settings(
            list(COCO_OBJECT_LABELS), RESNET_152_IMAGE_PROCESSING, 64, None
        ),
        description=PAPER_DESCRIPTION,
        train_command=(
            "python examples/train.py \\\n"
            f"  --dataset_dir ../shared/data/{folder} --image_dir path/to/{folder}_images \\\n"
            f"  --objects_file path/to/{folder}_objects.json \\\n"
            "  --text_model bert-base-cased --vision_model microsoft/resnet-152 \\\n"
            "  --granularities image,objects --word_vectors path/to/tweet_word2vec_200d.txt \\\n"
            "  --num_neighbours 4 --no_word_shape --max_length 64 \\\n"
            f"  --output_dir outputs/mgcm-paper-twitter{corpus}"
        ),
        base_model=("bert-base-cased", "microsoft/resnet-152"),
        datasets=(folder,),
        published_results=published_results_table(corpus),
    )


def offline_configuration(short_name: str, encoder: str, text_config: dict) -> HubConfiguration:
    """The offline configuration with the sentence-embedding encoder `encoder` (a Hub id)."""
    return HubConfiguration(
        name=f"mgcm-offline-{short_name}",
        title=f"MGCM, offline configuration ({encoder.split('/')[-1]}, GloVe 50-d, captions)",
        config=MGCMConfig(
            text_config=AutoConfig.for_model(**text_config),
            vision_config=None,
            use_image=False,
            use_objects=False,
            text_sources=["caption"],
            augmentation_mode="gate",
            augmentation_dim=50,
            num_neighbours=4,
            use_word_shape=True,
        ),
        processor_settings=processor_settings(None, None, 128, "http"),
        description=OFFLINE_DESCRIPTION.format(encoder=encoder),
        train_command=(
            "python examples/train.py \\\n"
            "  --dataset_dir ../shared/data/twitter2017 \\\n"
            "  --captions_file ../shared/data/captions/twitter2017_blip2.txt --granularities caption \\\n"
            f"  --text_model {encoder} --word_vectors path/to/glove-6b-50d \\\n"
            f"  --num_neighbours 4 --output_dir outputs/mgcm-offline-{short_name}"
        ),
        base_model=(encoder,),
    )


def hub_configurations() -> list[HubConfiguration]:
    """Every configuration of `hub_configs/`, in a fixed order."""
    return [
        paper_configuration("2015"),
        paper_configuration("2017"),
        offline_configuration("minilm", "sentence-transformers/all-MiniLM-L6-v2", ALL_MINILM_L6_V2),
        offline_configuration("mpnet", "sentence-transformers/all-mpnet-base-v2", ALL_MPNET_BASE_V2),
    ]


def config_json(config: MGCMConfig) -> str:
    """The config as `save_pretrained` writes it, without the transformers version (a template, not a run)."""
    values = json.loads(config.to_json_string(use_diff=True))
    values.pop("transformers_version", None)
    for name in ("text_config", "vision_config"):
        if isinstance(values.get(name), dict):
            values[name].pop("transformers_version", None)
            values[name].pop("_name_or_path", None)
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def card_template(configuration: HubConfiguration) -> str:
    """The model-card template: fixed text about the configuration, placeholders for a run's results."""
    config = configuration.config
    granularities = ", ".join(config.granularities) or "none (text only)"
    vision = config.vision_config.model_type if config.vision_config is not None else "none"
    data = base_card_data(configuration.base_model, list(configuration.datasets) or None)
    return card_text(
        data,
        body=f"""
# {configuration.title}

{configuration.description}

{LABEL_NOTE}

| setting | value |
|---|---|
| text encoder | {config.text_config.model_type}, {config.text_config.num_hidden_layers} layers, {config.hidden_size}-d |
| vision backbone | {vision}{f", {config.image_feature_dim}-d regions" if config.image_feature_dim else ""} |
| granularities | {granularities} |
| objects | {f"{config.max_objects} per image, {len(config.object_labels)} classes" if config.use_objects else "off"} |
| semantic augmentation | {config.augmentation_mode}, k={config.num_neighbours}, {config.augmentation_dim}-d vectors |
| word shape | {"on" if config.use_word_shape else "off"} |
| auxiliary span loss weight | {config.aux_span_loss_weight} |
| window | {configuration.processor_settings["max_length"]} word pieces, stride {configuration.processor_settings["stride"]} words |

## Training

{{{{ training_summary }}}}

Trained with the `mgcm` package:

```bash
{configuration.train_command}
```

The checkpoint kept is the epoch with the best **valid** F1; the test split is never used for selection.

## Results

Entity-level seqeval scores (%). **lenient** is seqeval's default (conlleval-like), the convention of
published Twitter-2015/2017 results; **strict** is IOB2 strict mode.

{{{{ results_table }}}}

{configuration.published_results}## Use

The pipeline, model and processor code ship with the weights (`trust_remote_code=True`); no `mgcm` install
is needed.

```python
from transformers import pipeline

tagger = pipeline(model="{{{{ repo_id }}}}", trust_remote_code=True)  # the "multimodal-ner" pipeline
tagger({example_post(config)})
```

Or the model and processor themselves:

```python
from transformers import AutoModelForTokenClassification, AutoProcessor

model = AutoModelForTokenClassification.from_pretrained("{{{{ repo_id }}}}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{{{ repo_id }}}}", trust_remote_code=True)
```
""",
    )


def rendered_files(configuration: HubConfiguration) -> dict[str, str]:
    """File name -> text of one configuration's folder."""
    return {
        CONFIG_FILE: config_json(configuration.config),
        PROCESSOR_FILE: json.dumps(configuration.processor_settings, indent=2, sort_keys=True) + "\n",
        CARD_FILE: card_template(configuration),
    }


def write_hub_configs(output_dir: Path = HUB_CONFIGS_DIR) -> list[Path]:
    """Write every configuration's folder under `output_dir`; returns the files written."""
    written = []
    for configuration in hub_configurations():
        folder = Path(output_dir) / configuration.name
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, text in rendered_files(configuration).items():
            (folder / file_name).write_text(text, encoding="utf-8")
            written.append(folder / file_name)
    return written


def outdated_files(output_dir: Path = HUB_CONFIGS_DIR) -> list[Path]:
    """The files under `output_dir` that differ from what `write_hub_configs` would write (or are missing)."""
    outdated = []
    for configuration in hub_configurations():
        for file_name, text in rendered_files(configuration).items():
            path = Path(output_dir) / configuration.name / file_name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                outdated.append(path)
    return outdated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", type=Path, default=HUB_CONFIGS_DIR)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        outdated = outdated_files(args.output_dir)
        for path in outdated:
            print(f"out of date: {path} (run python hub_configs/make_hub_configs.py)", file=sys.stderr)
        return 1 if outdated else 0
    for path in write_hub_configs(args.output_dir):
        print(path)
    return 0


__all__ = [
    "ALL_MINILM_L6_V2",
    "ALL_MPNET_BASE_V2",
    "HubConfiguration",
    "RESNET_152_IMAGE_PROCESSING",
    "card_template",
    "config_json",
    "hub_configurations",
    "main",
    "outdated_files",
    "processor_settings",
    "write_hub_configs",
]


if __name__ == "__main__":
    sys.exit(main())
