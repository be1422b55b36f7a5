"""mgcm-predict: one post, and JSON Lines in/out with one output line per input line, in order, error and
image_error records, a summary, and bounded reading."""

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

import modeling_mgcm  # noqa: F401  (registers the pipeline task)
from modeling_mgcm.pipeline_mgcm import BadImageWarning
from processing.predict_cli import main, tag_records

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def posts_file(tmp_path):
    """Posts covering every kind of line; returns (path, expected kind per line)."""
    Image.new("RGB", (40, 30), "green").save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"<html>not an image</html>")
    lines = [
        (
            json.dumps({"id": "t1", "text": "Jordan visits Phoenix", "image": str(tmp_path / "ok.png")}),
            "tagged",
        ),
        ("{not json", "error"),
        (json.dumps({"id": 2, "text": "Obama in Paris", "image": str(tmp_path / "gone.jpg")}), "masked"),
        (
            json.dumps({"text": "Paris photo", "image": str(tmp_path / "broken.jpg"), "caption": "a person"}),
            "masked",
        ),
        (json.dumps(["a", "list"]), "error"),
        ("", "error"),
        (
            json.dumps(
                {"id": "t7", "text": "Jordan with Obama", "objects": [{"label": "person", "score": 0.8}]}
            ),
            "tagged",
        ),
        (json.dumps({"text": "Paris", "imgae": "typo.jpg"}), "error"),
        (json.dumps({"id": "t9", "text": "Obama at the Paris photo", "caption": "a person"}), "tagged"),
    ]
    path = tmp_path / "posts.jsonl"
    path.write_bytes(("\n".join(line for line, _ in lines) + "\n").encode() + b"\xff\xfe broken bytes\n")
    return path, [kind for _, kind in lines] + ["error"]


def expected_output(tagger, line: str):
    """What the pipeline itself says about a post line (masked images give the text-only output)."""
    post = json.loads(line)
    post.pop("id", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        return tagger(post, aggregation="words", on_bad_image="mask")


def test_jsonl_round_trip_gives_one_line_per_input_line_in_order(
    tagger, tiny_mgcm_dir, posts_file, tmp_path, capsys
):
    path, kinds = posts_file
    output_path = tmp_path / "predictions.jsonl"
    status = main(
        [
            "--model",
            str(tiny_mgcm_dir),
            "--input",
            str(path),
            "--output",
            str(output_path),
            "--batch_size",
            "3",
            "--chunk_size",
            "4",
        ]
    )
    assert status == 0
    records = [json.loads(line) for line in output_path.read_text(encoding="utf-8").splitlines()]
    assert [record["line"] for record in records] == list(range(1, len(kinds) + 1))
    input_lines = path.read_bytes().split(b"\n")
    entities_per_type = {}
    for record, kind, line in zip(records, kinds, input_lines, strict=False):
        if kind == "error":
            assert set(record) <= {"line", "id", "error"} and record["error"].startswith(
                f"line {record['line']}: "
            )
            continue
        expected = expected_output(tagger, line.decode())
        assert record["text"] == expected["text"]
        assert [e["word"] for e in record["entities"]] == [e["word"] for e in expected["entities"]]
        for got, want in zip(record["entities"], expected["entities"], strict=True):
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            entities_per_type[got["entity_group"]] = entities_per_type.get(got["entity_group"], 0) + 1
        assert ("image_error" in record) == (kind == "masked")
        if kind == "masked":
            # Tagged from text (and caption) alone.
            text_only = expected_output(
                tagger, json.dumps({k: v for k, v in json.loads(line).items() if k != "image"})
            )
            assert [e["word"] for e in record["entities"]] == [e["word"] for e in text_only["entities"]]
    assert records[0]["id"] == "t1" and records[2]["id"] == 2 and records[6]["id"] == "t7"
    assert "invalid JSON" in records[1]["error"] and "empty line" in records[5]["error"]
    assert "unknown post keys ['imgae']" in records[7]["error"] and "not UTF-8" in records[9]["error"]
    assert "gone.jpg: missing image" in records[2]["image_error"]
    assert "broken.jpg: not an image" in records[3]["image_error"]
    summary = capsys.readouterr().err
    assert "posts: 10 (5 tagged, 5 errors)" in summary
    assert "posts whose image was masked: 2" in summary
    assert "posts/s" in summary
    for entity_type, count in entities_per_type.items():
        assert f"{entity_type} {count}" in summary


def test_a_post_the_pipeline_refuses_does_not_stop_its_chunk(tagger):
    lines = [
        json.dumps({"text": "Jordan visits Phoenix"}).encode(),
        json.dumps({"text": "Obama in Paris", "objects": [{"label": 3, "score": "high"}]}).encode(),
        json.dumps({"text": "Paris photo", "caption": 7}).encode(),
        json.dumps({"text": "Obama visits Jordan"}).encode(),
    ]
    records = list(tag_records(tagger, lines, batch_size=4, chunk_size=4))
    assert [("error" in record) for record in records] == [False, True, True, False]
    assert "object 0" in records[1]["error"] and "'caption' must be a string" in records[2]["error"]
    assert records[3]["entities"] == tagger("Obama visits Jordan")


def test_lines_are_read_one_chunk_at_a_time(tagger):
    pulled = []

    def lines():
        for index in range(7):
            pulled.append(index)
            yield json.dumps({"text": f"Obama visits Paris {index}"}).encode()

    records = tag_records(tagger, lines(), batch_size=2, chunk_size=3)
    first = next(records)
    assert first["line"] == 1 and len(pulled) == 3
    assert [record["line"] for record in [first, *records]] == list(range(1, 8))


def test_standard_input_and_output(tiny_mgcm_dir, monkeypatch, capsys):
    stdin = io.TextIOWrapper(
        io.BytesIO(b'{"text": "Jordan visits Phoenix"}\n{"text": "Paris"}\n'), encoding="utf-8"
    )
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["--model", str(tiny_mgcm_dir), "--input", "-", "--no_progress"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [record["text"] for record in records] == ["Jordan visits Phoenix", "Paris"]
    assert "posts: 2 (2 tagged, 0 errors)" in captured.err


def test_one_post_from_flags(tagger, tiny_mgcm_dir, tmp_path, capsys):
    Image.new("RGB", (40, 30), "green").save(tmp_path / "photo.png")
    argv = ["--model", str(tiny_mgcm_dir), "--text", "Jordan visits Phoenix", "--image", "photo.png"]
    assert main([*argv, "--image_dir", str(tmp_path), "--caption", "a man", "--objects", "person, ball"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = tagger(
        {
            "text": "Jordan visits Phoenix",
            "image": tmp_path / "photo.png",
            "caption": "a man",
            "objects": ["person", "ball"],
        }
    )
    assert [e["word"] for e in record["entities"]] == [
        e["word"] for e in expected
    ] and "image_error" not in record
    # Without --image_dir the relative path does not exist: the post is tagged from its text, and says so.
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "photo.png: missing image" in json.loads(captured.out)["image_error"]
    assert "image left out" in captured.err


def test_with_image_dir_a_post_cannot_make_the_command_open_or_quote_a_file_outside_it(
    tiny_mgcm_dir, tmp_path, capsys
):
    """Posts from strangers name paths: with --image_dir, one outside it is refused unopened (a file that is
    not an image would otherwise have its first bytes quoted in the output), one inside it is read."""
    images, secret = tmp_path / "images", tmp_path / "secret.txt"
    images.mkdir()
    Image.new("RGB", (40, 30), "green").save(images / "ok.png")
    secret.write_text("password=hunter2")
    (images / "inside.txt").write_text("password=inside")
    paths = [str(secret), "../secret.txt", "sub/../../secret.txt", "ok.png", "inside.txt"]
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"text": "Obama in Paris", "image": path}) + "\n" for path in paths))
    output = tmp_path / "out.jsonl"
    argv = ["--model", str(tiny_mgcm_dir), "--input", str(posts), "--output", str(output), "--no_progress"]
    assert main([*argv, "--image_dir", str(images)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    for record, path in zip(records[:3], paths, strict=False):
        assert record["image_error"] == (
            f"{path}: image refused (outside the image folder {images}: a post's image must be a file in it)"
        )
    assert "hunter2" not in output.read_text() + capsys.readouterr().err
    assert "image_error" not in records[3]
    # A file inside the folder is the operator's: it is opened, and a non-image is named as one.
    assert "inside.txt: not an image" in records[4]["image_error"]
    # Without --image_dir every path is the user's own, and is read.
    assert main(argv) == 0
    assert "secret.txt: not an image" in json.loads(output.read_text().splitlines()[0])["image_error"]


def test_image_url_hosts_keeps_the_command_off_other_hosts(tiny_mgcm_dir, tmp_path):
    """A URL on a host not named is refused before any connection (port 9, discard, would otherwise be
    tried and fail as unreadable); the flag with no host fetches no URL at all."""
    posts = tmp_path / "posts.jsonl"
    urls = ["http://127.0.0.1:9/a.png", "http://169.254.169.254/latest/meta-data"]
    posts.write_text("".join(json.dumps({"text": "Obama in Paris", "image": url}) + "\n" for url in urls))
    output = tmp_path / "out.jsonl"
    argv = ["--model", str(tiny_mgcm_dir), "--input", str(posts), "--output", str(output), "--no_progress"]
    for hosts in (["pbs.twimg.com", "twimg.com"], []):
        assert main([*argv, "--image_url_hosts", *hosts]) == 0
        records = [json.loads(line) for line in output.read_text().splitlines()]
        for record, host in zip(records, ["127.0.0.1", "169.254.169.254"], strict=True):
            assert record["entities"] is not None
            assert (
                f"image refused (the host '{host}' is not among the allowed image URL hosts)"
                in record["image_error"]
            )
    # Without the flag the URL is tried, and fails to connect.
    posts.write_text(json.dumps({"text": "Obama in Paris", "image": urls[0]}) + "\n")
    assert main(argv) == 0
    assert "unreadable image file" in json.loads(output.read_text())["image_error"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give either --text"),
        (["--text", "a", "--input", "x.jsonl"], "give either --text"),
        (["--input", "no/such.jsonl"], "no/such.jsonl: no such file"),
        (["--input", "-", "--image", "x.png"], "go with --text"),
        (["--text", "a", "--batch_size", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_stop_with_a_usage_error(tiny_mgcm_dir, argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--model", str(tiny_mgcm_dir), *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_folder_without_a_model_exits_with_status_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--model", str(tmp_path / "empty"), "--text", "Paris"]) == 1
    assert f"cannot load an MGCM model and processor from {tmp_path / 'empty'}" in capsys.readouterr().err


def test_module_runs_as_a_command(tiny_mgcm_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 5, "text": "Obama in Paris"}\nnot json\n', encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "processing.predict_cli",
            "--model",
            str(tiny_mgcm_dir),
            "--input",
            str(source),
            "--no_progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["id"] == 5 and records[0]["text"] == "Obama in Paris" and "error" in records[1]
    assert "posts: 2 (1 tagged, 1 errors)" in result.stderr


@pytest.mark.multiprocess
def test_two_processes_tag_their_shares_into_one_output_equal_to_one_process_s(
    tiny_mgcm_dir, posts_file, tmp_path
):
    """500 lines (posts with and without images, missing and broken images, bad JSON, bad bytes), in chunks
    of 32 dealt out between 2 CPU processes: one output in input order, the same records as one process
    writes, the same tags, scores within 1e-5."""
    from training_runs import run_environment, two_cpu_processes

    path, kinds = posts_file
    lines = path.read_bytes().splitlines(keepends=True)
    many = tmp_path / "many.jsonl"
    many.write_bytes(b"".join(lines[index % len(lines)] for index in range(500)))
    arguments = [
        "--model",
        str(tiny_mgcm_dir),
        "--input",
        str(many),
        "--chunk_size",
        "32",
        "--batch_size",
        "8",
    ]
    alone = tmp_path / "alone.jsonl"
    assert main(arguments + ["--output", str(alone), "--no_progress"]) == 0
    shared = tmp_path / "shared.jsonl"
    completed = subprocess.run(
        two_cpu_processes() + ["-m", "processing.predict_cli", *arguments, "--output", str(shared)],
        env=run_environment(ACCELERATE_USE_CPU="true"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "posts: 500" in completed.stderr
    # Chunks 0, 2, ..., 14 (8 x 32 lines) and 1, 3, ..., 15 (7 x 32 + the last 20).
    assert "process 0 of 2 tagged 256 lines" in completed.stderr
    assert "process 1 of 2 tagged 244 lines" in completed.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shared")) == ["shared.jsonl"]
    one = [json.loads(line) for line in alone.read_text(encoding="utf-8").splitlines()]
    two = [json.loads(line) for line in shared.read_text(encoding="utf-8").splitlines()]
    assert [record["line"] for record in two] == list(range(1, 501))
    assert sum("error" in record for record in two) == sum(
        kinds[i % len(kinds)] == "error" for i in range(500)
    )
    assert sum("image_error" in record for record in two) > 0
    for alone_record, shared_record in zip(one, two, strict=True):
        alone_entities = alone_record.pop("entities", [])
        shared_entities = shared_record.pop("entities", [])
        assert shared_record == alone_record
        assert [{k: v for k, v in e.items() if k != "score"} for e in shared_entities] == [
            {k: v for k, v in e.items() if k != "score"} for e in alone_entities
        ]
        for a, b in zip(alone_entities, shared_entities, strict=True):
            assert abs(a["score"] - b["score"]) <= 1e-5
