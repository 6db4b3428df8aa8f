"""Bad input from the command line, injected for real: exit 2, one `error:` line naming the
flag, file or value, no traceback, and nothing created or half-written (issue 9: 4, 5, 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from search.cli import cli
from siamese.errors import ConfigError
from siamese.names import NAME_RULE, check_name
from tests.faults.expect import TINY, bad_input, one_error_line, png_header

ROOT = Path(__file__).resolve().parents[2]


def _invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--home", str(home)])


# --- item 4: names that would escape the home folder -----------------------------------

BAD_NAMES = ["../../esc", "a/b", "a\\b", "..", ".hidden", "", "a\nb", "tab\there", "x" * 101]
NAMED = [
    ["search", "--study", "{}", "--trials", "1", *TINY, "--no-track"],
    ["report", "--study", "{}"],
    ["worker", "--study", "{}", "--storage", "journal:{tmp}/w.log", "--no-track"],
    ["promote", "--study", "{}"],
    ["promote", "--run", "0123456789abcdef0123456789abcdef", "--name", "{}"],
    ["train", "--experiment", "{}", *TINY],
    ["search", "--experiment", "{}", "--trials", "1", *TINY],
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("command", NAMED, ids=lambda c: f"{c[0]}{c[c.index('{}') - 1]}")
def test_a_name_that_is_not_a_plain_name_is_refused_before_anything_is_made(
    tmp_path: Path, command: list[str], name: str
) -> None:
    args = [name if a == "{}" else a.replace("{tmp}", str(tmp_path)) for a in command]
    flag = args[args.index(name) - 1]
    line = bad_input(_invoke(tmp_path / "home", *args), f"{flag} {name!r}: {NAME_RULE}")
    assert "\n" not in line
    assert not list(tmp_path.iterdir())  # no home, no study, no store, no ../../esc


def test_search_with_an_escaping_study_writes_no_checkpoint_outside_the_home(
    tmp_path: Path,
) -> None:
    home = tmp_path / "a" / "home"
    search = ["search", "--study", "../../esc", "--trials", "1", *TINY, "--no-track"]
    bad_input(_invoke(home, *search), "--study '../../esc'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["siamese-lab", "team_1.v2", "A", "x" * 100, "a.b-c_d"])
def test_plain_names_pass(name: str) -> None:
    assert check_name("--study", name) == name


@pytest.mark.parametrize("name", ["a..b", "é", "a b", "a:b", "a\x00b"])
def test_the_rule_is_the_same_in_the_library(name: str) -> None:
    with pytest.raises(ConfigError, match="expected a name of letters"):
        check_name("--name", name)


# --- item 5e: a GPU that is not there --------------------------------------------------


def _has_cuda(index: int) -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > index


@pytest.mark.skipif(_has_cuda(7), reason="this machine has a GPU 7")
@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "--devices", "7", "--trials", "1", *TINY, "--no-track"], "--devices 7: "),
        (["search", "--devices", "0,x", "--trials", "1", "--no-track"], "--devices '0,x'"),
        (["search", "--trials", "1", *TINY, "--device", "cuda:7", "--no-track"], "cuda:7"),
        (
            ["worker", "--study", "s", "--storage", "journal:{tmp}/j", "--device", "cuda:7"],
            "cuda:7",
        ),
        (["train", *TINY, "--device", "cuda:7"], "--device cuda:7"),
        (["train", *TINY, "--device", "cuda:x"], "--device"),
    ],
)
def test_a_missing_gpu_is_refused_before_the_study_run_or_home_exists(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    bad_input(_invoke(tmp_path / "home", *args), needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--no-track", "--epochs", "1", *TINY],
        ["search", "--trials", "1", *TINY],
        ["diagnose", "abcdef12"],
        ["ui"],
    ],
    ids=lambda a: a[0],
)
def test_a_home_that_is_a_file_is_refused_before_anything_runs(
    tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "notes.txt"
    home.write_text("not a folder\n")
    bad_input(_invoke(home, *args), f"the home folder {home}", "is a file")
    assert home.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "args",
    [["diagnose", "abcdef12"], ["promote", "--run", "abcdef12"]],
    ids=lambda a: a[0],
)
def test_a_read_only_command_on_a_home_without_a_store_makes_none(
    tmp_path: Path, args: list[str]
) -> None:
    """A mistyped --home is named, not made (with an empty MLflow store in it)."""
    typo = tmp_path / "hoem"
    bad_input(_invoke(typo, *args), f"sqlite:///{typo}/mlflow.db: no MLflow store there")
    assert not typo.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--home", "", "train", "--no-track", *TINY],
        ["train", "--no-track", *TINY, "--home", ""],
        ["report", "--study", "s", "--home", ""],
    ],
    ids=["before the command", "after it", "read-only"],
)
def test_an_empty_home_is_refused_not_taken_for_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    bad_input(result, "--home '': expected a folder")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["--home", "{tmp}/home", "train", "--no-track", *TINY],
        ["data", "check"],  # it checked the same-class pairs and said "ok"
        ["data", "export", "--out", "{tmp}/pairs"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_target_without_one_vs_rest_is_refused(tmp_path: Path, args: list[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(cli, [*args, "--target", "3"])
    bad_input(result, "--target: expected nothing without --task one-vs-rest, got '3'")
    assert not list(tmp_path.iterdir())


def test_predict_refuses_pairs_and_images_together(tmp_path: Path) -> None:
    args = ["predict", "--model", "x.pt", "--pairs", "f.csv", "a.png", "b.png"]
    bad_input(_invoke(tmp_path / "home", *args), "not both")


def test_a_home_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, where a folder would have to be\n")
    home = tmp_path / "notes.txt" / "home"
    result = _invoke(home, "train", "--no-track", "--epochs", "1", *TINY)
    bad_input(result, f"the home folder {home}", "cannot be made")


@pytest.mark.parametrize("value", ["nan", "-1", "soon"])
@pytest.mark.parametrize("command", ["search", "worker"])
def test_a_checkpoint_interval_that_is_not_seconds_is_refused(
    tmp_path: Path, command: str, value: str
) -> None:
    study = ["--study", "s", "--storage", f"journal:{tmp_path}/j"] if command == "worker" else []
    result = _invoke(tmp_path / "home", command, *study, "--checkpoint-every", value)
    bad_input(result, "--checkpoint-every")
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    "flags,space,line",
    [
        (["--lr", "nan"], None, "--lr: expected a positive finite number, got nan"),
        (["--dropout", "5"], None, "--dropout: expected a number in [0, 1), got 5.0"),
        (
            [],
            "[dropout]\nlow = 1.5\nhigh = 2\n",
            "[dropout] low = 1.5: --dropout: expected a number in [0, 1), got 1.5",
        ),
        (
            [],
            "[momentum]\nlow = 0.5\nhigh = 5\n",
            "[momentum] high = 5: --momentum: expected a number in [0, 1), got 5.0",
        ),
    ],
)
def test_a_search_value_no_trial_could_train_with_is_refused_before_the_study_exists(
    tmp_path: Path, flags: list[str], space: str | None, line: str
) -> None:
    """A study stores its space: a bad value in it would fail every trial, for good."""
    space_args: list[str] = []
    if space is not None:
        (tmp_path / "space.toml").write_text(space)
        space_args = ["--space", str(tmp_path / "space.toml")]
    result = _invoke(tmp_path / "home", "search", "--trials", "1", *TINY, *flags, *space_args)
    bad_input(result, line)
    assert not (tmp_path / "home").exists()


# --- item 5d: a search space file that is not text -------------------------------------


def test_a_space_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_bytes(b"\xff\xfe[lr]\nlow = 1e-4\n")
    result = _invoke(tmp_path / "home", "search", "--space", str(space), *TINY, "--no-track")
    bad_input(result, f"--space {space}: not a UTF-8 text file")
    assert not (tmp_path / "home").exists()


# --- item 11: --run and --study at once --------------------------------------------------


def test_promote_refuses_run_and_study_together(tmp_path: Path) -> None:
    result = _invoke(tmp_path / "home", "promote", "--run", "abcdef12", "--study", "s")
    bad_input(result, "--run abcdef12", "--study s", "give one")
    assert not (tmp_path / "home").exists()


# --- items 5a, 5b: files that are not checkpoints ----------------------------------------


def _not_checkpoints(folder: Path) -> list[Path]:
    text = folder / "notes.txt"
    text.write_text("hello\n")
    binary = folder / "noise.pt"
    binary.write_bytes(os.urandom(256))
    archive = folder / "other.pt"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("other/readme.txt", "a zip, but not one torch.save wrote")
    system = [Path("/etc/passwd")] if Path("/etc/passwd").is_file() else []
    return [text, binary, archive, *system]


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    for path in _not_checkpoints(tmp_path):
        before = path.read_bytes()
        bad_input(_invoke(tmp_path / "home", "train", "--resume", str(path)), f"{path}: ")
        assert path.read_bytes() == before
    assert not (tmp_path / "home").exists()


def test_predict_with_a_model_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    left = tmp_path / "left.png"
    Image.new("L", (50, 40), 128).save(left)
    for path in _not_checkpoints(tmp_path):
        result = _invoke(tmp_path / "home", "predict", "--model", str(path), str(left), str(left))
        bad_input(result, f"{path}: ")
    assert not (tmp_path / "home").exists()


# --- item 5f: images too large to decode ------------------------------------------------


def _big_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    real = folder / "real-4100.png"
    Image.new("L", (4100, 4100)).save(real)  # over our limit, under Pillow's
    return [
        real,
        png_header(folder / "bomb-20000.png", 20000, 20000),  # Pillow's error at open
        png_header(folder / "bomb-10000.png", 10000, 10000),  # Pillow's warning at open
        png_header(folder / "wide-5000.png", 5000, 5000),
    ]


def test_data_check_refuses_a_huge_image_naming_it_before_decoding(tmp_path: Path) -> None:
    for big in _big_images(tmp_path / "big"):
        root = tmp_path / f"set-{big.stem}"
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("L", (50, 40), 40 * i).save(root / cls / f"{i}.png")
        huge = root / "a" / "7.png"
        huge.write_bytes(big.read_bytes())
        result = CliRunner().invoke(cli, ["data", "check", "--data", f"folder:{root}"])
        bad_input(result, f"{huge}: image of ", "expected at most 16,777,216 pixels")


def test_predict_refuses_a_huge_image_before_loading_the_model(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.new("L", (50, 40), 200).save(small)
    for big in _big_images(tmp_path / "big"):
        result = _invoke(tmp_path / "home", "predict", "--model", "no.pt", str(small), str(big))
        bad_input(result, f"{big}: image of ", "refused before decoding")
    assert not (tmp_path / "home").exists()


# --- end to end: a real process, no traceback -------------------------------------------


def test_a_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")  # torch.load: KeyError 101, a traceback before
    env = {**os.environ, "SIAMESE_LAB_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", "train", "--resume", str(notes)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_error_line(done.stderr, done.returncode, done.stdout + done.stderr, f"{notes}: ")
    assert done.stdout == "" and not (tmp_path / "home").exists()


def test_predict_names_a_registered_model_given_without_version_or_alias(tmp_path: Path) -> None:
    left = tmp_path / "left.png"
    Image.new("L", (50, 40), 128).save(left)
    result = _invoke(
        tmp_path / "home", "predict", "--model", "models:/siamese", str(left), str(left)
    )
    bad_input(result, "--model models:/siamese: a registered model needs a version or an alias")
    assert "models:/siamese@champion" in result.output
    assert not (tmp_path / "home").exists()


def test_predict_takes_a_file_uri_for_its_checkpoint(tmp_path: Path) -> None:
    left = tmp_path / "left.png"
    Image.new("L", (50, 40), 128).save(left)
    notes = tmp_path / "my notes.pt"
    notes.write_text("not a checkpoint\n")
    uri = notes.as_uri()  # file:///.../my%20notes.pt
    result = _invoke(tmp_path / "home", "predict", "--model", uri, str(left), str(left))
    bad_input(result, f"{notes}: ")  # read as that file (it was "no such checkpoint file")
    assert "no such checkpoint file" not in result.output


@pytest.mark.parametrize("args", [[], ["data"]], ids=["siamese-lab", "data"])
def test_a_group_without_its_command_prints_its_help(args: list[str]) -> None:
    """It printed the whole help as one `error: Usage: ...` on stderr, exit 2."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ") and "Commands:" in result.stdout
    assert result.stderr == ""


def test_one_vs_rest_without_a_target_names_the_missing_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "check", "--task", "one-vs-rest"])
    bad_input(result, "--target: required with --task one-vs-rest")
    assert "None" not in result.output
