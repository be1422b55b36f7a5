"""Safe loading: weights from safetensors only, nothing unpickled, damaged caches detected and rebuilt, and no
remote code needed by the installed package."""

import ast
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.numpy import save_file
from transformers import AutoModelForTokenClassification, AutoProcessor, BertModel

import modeling_mgcm
import processing
from modeling_mgcm import MGCMConfig, MGCMForTokenClassification, MGCMPreTrainedModel
from modeling_mgcm.neighbour_table import CHECKSUM_KEY, TABLE_FILE_NAME, NeighbourTable
from processing import LABEL_NAMES
from processing.testing.tiny_backbones import tiny_text_config
from processing.text.neighbour_search import build_neighbour_table
from processing.text.word_vectors import WordVectors, WordVectorsFormatError, load_word_vectors
from processing.training.checkpointing import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = sorted(
    path for folder in ("modeling_mgcm", "processing", "examples") for path in (REPO / folder).rglob("*.py")
)


class CodeOnUnpickle:
    """A pickle payload that writes `marker` when unpickled: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


@pytest.fixture
def unpickling_spy(monkeypatch):
    """Records every torch.load call (its keyword arguments) and then loads as usual."""
    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    return calls


def tiny_model() -> MGCMForTokenClassification:
    config = MGCMConfig(
        text_config=tiny_text_config(40, hidden_size=32),
        use_image=False,
        use_objects=False,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )
    torch.manual_seed(0)
    return MGCMForTokenClassification(config)


@pytest.fixture
def pickle_only_folder(tmp_path) -> tuple[Path, dict]:
    """A saved MGCM folder whose weights were converted to `pytorch_model.bin` (a pickle)."""
    folder = tmp_path / "pickled"
    model = tiny_model()
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    return folder, state


# ----------------------------------------------------------------------------------------------------------
# Model weights: safetensors only unless the user opts in


@pytest.mark.parametrize("loader", [MGCMForTokenClassification, AutoModelForTokenClassification])
def test_a_folder_with_only_a_pickle_checkpoint_is_refused_before_anything_is_unpickled(
    pickle_only_folder, unpickling_spy, loader
):
    """MGCM defaults to use_safetensors=True (transformers' None would fall back to the pickle), and
    transformers then refuses the folder itself."""
    folder, _ = pickle_only_folder
    with pytest.raises(OSError, match="no file named model.safetensors found in directory") as caught:
        loader.from_pretrained(folder)
    assert str(folder) in str(caught.value)
    assert unpickling_spy == []


def test_the_user_can_opt_in_to_a_trusted_pickle_checkpoint(pickle_only_folder, unpickling_spy):
    folder, state = pickle_only_folder
    model = AutoModelForTokenClassification.from_pretrained(folder, use_safetensors=False)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    # Even then transformers unpickles with torch's restricted loader.
    assert unpickling_spy and all(call.get("weights_only") is True for call in unpickling_spy)


TEXT_ONLY = {"use_image": False, "use_objects": False, "augmentation_mode": "none"}


def test_from_backbones_refuses_a_pickle_only_encoder_folder_unless_the_user_opts_in(
    tmp_path, unpickling_spy
):
    folder = tmp_path / "encoder"
    encoder = BertModel(tiny_text_config(40, hidden_size=32))
    encoder.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(encoder.state_dict(), folder / "pytorch_model.bin")

    with pytest.raises(OSError, match=f"no file named model.safetensors found in directory {folder}"):
        MGCMForTokenClassification.from_backbones(folder, **TEXT_ONLY)
    assert unpickling_spy == []
    model = MGCMForTokenClassification.from_backbones(folder, use_safetensors=False, **TEXT_ONLY)
    torch.testing.assert_close(
        model.mgcm.text_encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight
    )
    assert unpickling_spy and all(call.get("weights_only") is True for call in unpickling_spy)


def redirect_config(folder: Path, marker: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["transformers_weights"] = "adapter_model.bin"
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"payload": CodeOnUnpickle(marker)}, folder / "adapter_model.bin")


def redirect_index(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").unlink()
    names = list(tiny_model().state_dict())
    index = {"metadata": {}, "weight_map": {name: "model-00001.bin" for name in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.save({"payload": CodeOnUnpickle(marker)}, folder / "model-00001.bin")


@pytest.mark.parametrize(
    "redirect", [redirect_config, redirect_index], ids=["config.json", "safetensors index"]
)
def test_a_config_or_index_pointing_at_a_pickle_file_is_refused(tmp_path, unpickling_spy, redirect):
    """transformers reads whatever file `transformers_weights` or an index's `weight_map` names, even with
    use_safetensors=True: a downloaded folder could smuggle a pickle in that way."""
    folder, marker = tmp_path / "model", tmp_path / "marker"
    tiny_model().save_pretrained(folder)
    redirect(folder, marker)
    with pytest.raises(OSError, match="would unpickle"):
        AutoModelForTokenClassification.from_pretrained(folder)
    assert unpickling_spy == [] and not marker.exists()


@pytest.mark.parametrize(
    "redirect", [redirect_config, redirect_index], ids=["config.json", "safetensors index"]
)
def test_transformers_alone_would_unpickle_what_a_config_or_index_points_at(
    tmp_path, unpickling_spy, redirect
):
    """Why `refuse_pickle_weights` exists: `PreTrainedModel.from_pretrained(..., use_safetensors=True)` reads
    these files (with torch's restricted unpickler, which stops this payload). If this fails, transformers
    refuses them itself and the check can go."""
    folder, marker = tmp_path / "model", tmp_path / "marker"
    tiny_model().save_pretrained(folder)
    redirect(folder, marker)
    library_loading = super(MGCMPreTrainedModel, MGCMForTokenClassification).from_pretrained
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        library_loading(folder, use_safetensors=True)
    assert unpickling_spy and not marker.exists()


def test_a_safetensors_folder_loads_through_the_auto_classes_without_remote_code(
    tiny_mgcm_dir, unpickling_spy
):
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir)
    processor = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    # The installed package's own classes, not code copied from the folder (which needs trust_remote_code).
    assert type(model).__module__ == "modeling_mgcm.modeling_mgcm"
    assert type(processor).__module__ == "modeling_mgcm.processing_mgcm"
    assert unpickling_spy == []


# ----------------------------------------------------------------------------------------------------------
# Nothing in the package unpickles


def call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def keyword_value(node: ast.Call, name: str):
    for keyword in node.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value) if isinstance(keyword.value, ast.Constant) else "<expr>"
    return "<absent>"


def test_the_package_never_unpickles_and_never_asks_for_remote_code():
    """Every np.load passes allow_pickle=False, every torch.load weights_only=True; no pickle, dill or
    joblib import; and no trust_remote_code=True outside the tests (that is only for the Hub export)."""
    problems = []
    for path in PACKAGE_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    module.split(".")[0] in {"pickle", "dill", "joblib", "cloudpickle"} for module in modules
                ):
                    problems.append(f"{where}:{node.lineno}: imports a pickle library")
            if not isinstance(node, ast.Call):
                continue
            name = call_name(node)
            if name.endswith("np.load") or name == "numpy.load":
                if keyword_value(node, "allow_pickle") is not False:
                    problems.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
            if name == "torch.load":
                if keyword_value(node, "weights_only") is not True:
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if keyword_value(node, "trust_remote_code") not in ("<absent>", False):
                problems.append(f"{where}:{node.lineno}: trust_remote_code")
    # The scanned files are the imported package (installed in development mode).
    scanned_folders = {path.parent for path in PACKAGE_SOURCES}
    assert {Path(modeling_mgcm.__file__).parent, Path(processing.__file__).parent} <= scanned_folders
    assert problems == []


def test_word_vectors_holding_a_pickle_are_refused_without_unpickling(tmp_path):
    folder, marker = tmp_path / "vectors", tmp_path / "marker"
    folder.mkdir()
    np.save(folder / "vectors.npy", np.array([CodeOnUnpickle(marker)], dtype=object), allow_pickle=True)
    (folder / "words.txt").write_text("word\n")
    with pytest.raises(WordVectorsFormatError, match="not a plain numeric .npy array"):
        load_word_vectors(folder)
    assert not marker.exists()


def test_a_training_checkpoint_holding_code_is_refused_on_resume(tmp_path):
    """accelerate unpickles optimizer, scheduler and RNG files with torch's restricted loader: a payload
    planted in a checkpoint stops the resume instead of running."""
    accelerator = Accelerator()
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoint = save_checkpoint(accelerator, tmp_path / "checkpoints", 1, {"epoch": 0})
    marker = tmp_path / "marker"
    torch.save({"state": CodeOnUnpickle(marker), "param_groups": []}, checkpoint / "optimizer.bin")
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        load_checkpoint(accelerator, checkpoint)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# Neighbour tables: a damaged file is detected; a damaged cache file is rebuilt


def small_vectors() -> WordVectors:
    rng = np.random.default_rng(0)
    words = ["paris", "london", "rome", "obama", "trump", "merkel", "goal", "match"]
    return WordVectors(words, rng.normal(size=(len(words), 6)).astype(np.float32))


def same_table(first: NeighbourTable, second: NeighbourTable) -> bool:
    return (first.vocabulary, first.neighbour_words) == (second.vocabulary, second.neighbour_words) and all(
        np.array_equal(getattr(first, name), getattr(second, name))
        for name in ("neighbour_indices", "neighbour_weights", "neighbour_vectors")
    )


def rewrite_table_file(path: Path, change) -> None:
    """Rewrite a table file as a valid safetensors file after `change(tensors, metadata)`."""
    with safe_open(str(path), framework="np") as stream:
        metadata = stream.metadata()
        tensors = {name: stream.get_tensor(name) for name in stream.keys()}
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-9])


def flip_a_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))


def alter_a_weight(path: Path) -> None:
    rewrite_table_file(path, lambda tensors, metadata: tensors["neighbour_weights"].__setitem__((0, 0), 0.99))


def alter_a_word(path: Path) -> None:
    def change(tensors, metadata):
        metadata["vocabulary"] = metadata["vocabulary"].replace("paris", "pariz")

    rewrite_table_file(path, change)


def drop_the_checksum(path: Path) -> None:
    rewrite_table_file(path, lambda tensors, metadata: metadata.pop(CHECKSUM_KEY))


def not_safetensors(path: Path) -> None:
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle


DAMAGES = [truncate, flip_a_data_byte, alter_a_weight, alter_a_word, drop_the_checksum, not_safetensors]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_neighbour_table_cache_file_is_rebuilt_not_trusted(
    tmp_path, counted_searches, damage, caplog
):
    vectors = small_vectors()
    original = build_neighbour_table(vectors.words, vectors, k=2, cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("neighbour_table-*.safetensors")
    damage(cache_file)
    with caplog.at_level(logging.WARNING, logger="processing.text.neighbour_search"):
        rebuilt = build_neighbour_table(vectors.words, vectors, k=2, cache_dir=tmp_path)
    assert len(counted_searches) == 2, "the damaged cache file was used instead of rebuilt"
    assert str(cache_file) in caplog.text and "rebuilding" in caplog.text
    assert same_table(rebuilt, original)
    # The rebuilt file replaced the damaged one: the next build reads it.
    assert same_table(build_neighbour_table(vectors.words, vectors, k=2, cache_dir=tmp_path), original)
    assert len(counted_searches) == 2


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_saved_neighbour_table_is_refused_naming_the_file(tmp_path, damage):
    vectors = small_vectors()
    build_neighbour_table(vectors.words, vectors, k=2).save_pretrained(tmp_path)
    damage(tmp_path / TABLE_FILE_NAME)
    with pytest.raises(ValueError, match=str(tmp_path / TABLE_FILE_NAME)):
        NeighbourTable.from_pretrained(tmp_path)


def test_a_table_of_the_format_before_checksums_is_refused_naming_both_versions(tmp_path):
    """Accepting version 1 files (no checksum) would let a damaged file pass as an old one."""
    vectors = small_vectors()
    build_neighbour_table(vectors.words, vectors, k=2).save_pretrained(tmp_path)

    def as_version_1(tensors, metadata):
        metadata.pop(CHECKSUM_KEY)
        metadata["format_version"] = "1"

    rewrite_table_file(tmp_path / TABLE_FILE_NAME, as_version_1)
    with pytest.raises(ValueError, match=r"of version 2 \(format='mgcm-neighbour-table', version='1'\)"):
        NeighbourTable.from_pretrained(tmp_path)
