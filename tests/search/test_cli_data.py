"""Every pre-flight error: exit 2, one line naming the file/index/flag, no traceback."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from search.cli import cli


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


def _assert_bad_input(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 40, 50)).astype(np.float32)


def test_nan_pixels_name_the_image(tmp_path: Path) -> None:
    x = _images(12)
    x[7, 3, 3] = np.nan
    source = _npz(tmp_path / "nan.npz", x, np.repeat([0, 1], 6))
    _assert_bad_input(_run("data", "check", "--data", source), "x[7]", "NaN")


def test_mixed_shapes_are_refused(tmp_path: Path) -> None:
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((40, 50)), np.zeros((30, 30))
    np.savez(tmp_path / "ragged.npz", x=ragged, y=np.array([0, 1]))
    _assert_bad_input(
        _run("data", "check", "--data", f"npz:{tmp_path / 'ragged.npz'}"), "ragged.npz", "shape"
    )


def test_unreadable_image_file_is_named(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    _assert_bad_input(
        _run("data", "check", "--data", f"folder:{tmp_path}"), "broken.png", "cannot read"
    )


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a" / "0.png")
    _assert_bad_input(_run("data", "check", "--data", f"folder:{tmp_path}"), "empty", "no .png")


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    source = _npz(tmp_path / "one.npz", _images(10), np.zeros(10, int))
    _assert_bad_input(_run("data", "check", "--data", source), "one.npz", "at least 2 classes")


def test_too_few_images_of_a_class(tmp_path: Path) -> None:
    source = _npz(tmp_path / "few.npz", _images(10), np.array([0] * 7 + [1] * 3))
    _assert_bad_input(_run("data", "check", "--data", source), "class '1' has 3", "at least 6")


def test_target_that_is_not_a_class() -> None:
    result = _run("data", "check", "--task", "one-vs-rest", "--target", "12")
    _assert_bad_input(result, "--target '12'", "expected one of 0, 1")


def test_missing_npz_file(tmp_path: Path) -> None:
    _assert_bad_input(
        _run("data", "check", "--data", f"npz:{tmp_path / 'nope.npz'}"), "nope.npz", "no such file"
    )


@pytest.mark.parametrize("source", ["folder:", "npz:", "folder:  "])
def test_a_data_source_without_its_path_is_refused(source: str) -> None:
    """`folder:` with nothing after it read the current folder."""
    _assert_bad_input(_run("data", "check", "--data", source), "--data", "folder:PATH")


def test_unknown_data_source() -> None:
    _assert_bad_input(_run("data", "check", "--data", "mnist"), "--data", "digits, shapes")


def test_bad_flag_value_is_one_line() -> None:
    _assert_bad_input(_run("train", "--head", "relu3", "--no-track"), "--head", "relu3")


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--lr", "-1"], "--lr"),
        (["--dropout", "1.5"], "--dropout"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_invalid_config_values_are_refused_before_training(flags: list[str], needle: str) -> None:
    _assert_bad_input(_run("train", "--no-track", *flags), needle)


def test_warnings_for_duplicates_imbalance_and_constant_images(tmp_path: Path) -> None:
    x = _images(70)
    x[1] = x[0]  # the same picture twice: likely to land in two splits
    for i in range(2, 40):
        x[i] = x[0]
    x[45] = 0.5  # a constant image
    y = np.array([0] * 60 + [1] * 10)
    result = _run("data", "check", "--data", _npz(tmp_path / "w.npz", x, y))
    assert result.exit_code == 0, result.output
    assert "appear in two splits" in result.output
    assert "class imbalance" in result.output
    assert "constant image" in result.output


def test_clean_data_passes(tmp_path: Path) -> None:
    result = _run("data", "check", "--json")
    assert result.exit_code == 0
    assert '"warnings": []' in result.output


def _exported_rows(folder: Path) -> list[list[str]]:
    import csv

    with open(folder / "pairs.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["left", "right", "same"]
    return rows


def test_export_writes_held_out_test_pairs_that_read_back_as_trained(tmp_path: Path) -> None:
    from siamese import DataConfig, prepare_data
    from siamese.data import read_image_file

    result = _run("data", "export", "--out", str(tmp_path / "samples"), "--pairs", "12")
    assert result.exit_code == 0, result.output
    rows = _exported_rows(tmp_path / "samples")
    data = prepare_data(DataConfig())
    assert len(rows) == 12 and {row[2] for row in rows} == {"0", "1"}
    for i, (left, right, same) in enumerate(rows):
        # The i-th test pair, each image under its class folder, named by its test index.
        test_index = int(data.test_pairs.left[i]), int(data.test_pairs.right[i])
        assert [int(Path(p).stem.removeprefix("test")) for p in (left, right)] == list(test_index)
        assert same == str(int(data.test_pairs.labels[i]))
        assert (Path(left).parent == Path(right).parent) == (same == "1")
        for path, index in zip((left, right), test_index, strict=True):
            pixels = read_image_file(tmp_path / "samples" / path)
            assert np.abs(pixels - data.test.images[index]).max() <= 0.5 / 255 + 1e-6


def test_export_says_when_the_test_split_has_fewer_pairs_than_asked(tmp_path: Path) -> None:
    from siamese import DataConfig, prepare_data

    available = len(prepare_data(DataConfig()).test_pairs)
    out = tmp_path / "all"
    result = _run("data", "export", "--out", str(out), "--pairs", "100000")
    assert result.exit_code == 0, result.output
    assert len(_exported_rows(out)) == available
    note = f"note: --pairs 100000: the test split has {available} (as many as --val-pairs)"
    assert f"{note}; all of them are here" in result.output
    enough = _run("data", "export", "--out", str(tmp_path / "some"), "--pairs", "3")
    assert enough.exit_code == 0 and "note:" not in enough.output
    # Not asked for: the note names the default, not a --pairs nobody typed.
    few = _run("data", "export", "--out", str(tmp_path / "few"), "--val-pairs", "10")
    assert few.exit_code == 0, few.output
    assert "note: the default 20: the test split has 10 (as many as --val-pairs)" in few.output


def test_export_feeds_predict(tmp_path: Path) -> None:
    trained = _run(
        "train",
        "--home",
        str(tmp_path),
        "--no-track",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--train-pairs",
        "128",
        "--val-pairs",
        "64",
        "--json",
    )
    assert trained.exit_code == 0, trained.output
    checkpoint = json.loads(trained.stdout)["checkpoints"]["best"]
    assert _run("data", "export", "--out", str(tmp_path / "s"), "--pairs", "5").exit_code == 0
    scored = _run(
        "predict", "--model", checkpoint, "--pairs", str(tmp_path / "s" / "pairs.csv"), "--json"
    )
    assert scored.exit_code == 0, scored.output
    rows = json.loads(scored.stdout)["pairs"]
    expected = [
        (tmp_path / "s" / left, tmp_path / "s" / right)
        for left, right, _ in _exported_rows(tmp_path / "s")
    ]
    assert [(Path(r["left"]), Path(r["right"])) for r in rows] == expected
    assert all(0.0 <= r["p_same"] <= 1.0 for r in rows)
    truth = [int(same) for _, _, same in _exported_rows(tmp_path / "s")]
    assert [r["same"] for r in rows] == truth  # the truth travels with each score

    text = _run("predict", "--model", checkpoint, "--pairs", str(tmp_path / "s" / "pairs.csv"))
    *lines, summary = text.stdout.strip().splitlines()
    assert [line.endswith(f"same={t}") for line, t in zip(lines, truth, strict=True)] == [True] * 5
    # Decided at the threshold the checkpoint stores, chosen on its validation pairs.
    threshold = json.loads(scored.stdout)["threshold"]
    right = sum((r["p_same"] >= threshold) == bool(t) for r, t in zip(rows, truth, strict=True))
    assert [r["decision"] == "same" for r in rows] == [r["p_same"] >= threshold for r in rows]
    assert summary == f"{right} of 5 pairs right at the threshold P(same) >= {threshold:.4f}"

    (tmp_path / "s" / "bad.csv").write_text("left,right,same\n1/a.png,1/b.png,yes\n")
    _assert_bad_input(
        _run("predict", "--model", checkpoint, "--pairs", str(tmp_path / "s" / "bad.csv")),
        "bad.csv",
        "row 1",
        "0 or 1",
    )
    for empty in ("", "left,right,same\n", "# only a comment\n"):
        (tmp_path / "s" / "empty.csv").write_text(empty)
        _assert_bad_input(
            _run("predict", "--model", checkpoint, "--pairs", str(tmp_path / "s" / "empty.csv")),
            "empty.csv",
            "no pairs in it",
        )


def test_export_refuses_an_existing_path(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    (tmp_path / "file").write_text("")
    for existing in ("taken", "file"):
        _assert_bad_input(
            _run("data", "export", "--out", str(tmp_path / existing)), "--out", "already exists"
        )
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"


def test_an_interrupted_export_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import siamese.data.export as export

    written: list[Path] = []

    def interrupted_after_three(path: Path, image: np.ndarray) -> None:
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)

    monkeypatch.setattr(export, "write_image_file", interrupted_after_three)
    result = _run("data", "export", "--out", str(tmp_path / "samples"))
    assert result.exit_code == 130 and len(written) == 3
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its hidden staging copy


def test_class_names_that_are_not_plain_folder_names_get_a_safe_one() -> None:
    from siamese.data.export import class_folder

    assert class_folder("cat", 0) == "cat" and class_folder("7", 7) == "7"
    for unsafe in ("..", ".", "", "a/b", "/abs", "#tag", " padded", "back\\slash"):
        assert class_folder(unsafe, 3) == "class3", unsafe
