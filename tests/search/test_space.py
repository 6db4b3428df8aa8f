from pathlib import Path

import optuna
import pytest

from search.space import SearchSpace, load_space, suggest_config
from siamese import ConfigError, TrainConfig

BASE = TrainConfig(epochs=2)


def test_fixed_trial_gives_the_config() -> None:
    trial = optuna.trial.FixedTrial(
        {"lr": 1e-6, "optimizer": "sgd", "momentum": 0.9, "head": "relu2", "dropout": 0.0}
    )
    config = suggest_config(trial, BASE, SearchSpace())
    assert (config.lr, config.optimizer, config.momentum, config.head, config.dropout) == (
        1e-6,
        "sgd",
        0.9,
        "relu2",
        0.0,
    )
    assert config.epochs == 2  # the rest comes from the base


def test_momentum_is_only_suggested_where_it_is_used() -> None:
    trial = optuna.trial.FixedTrial({"lr": 1e-3, "optimizer": "adam", "head": "sq", "dropout": 0.1})
    config = suggest_config(trial, BASE, SearchSpace())  # FixedTrial raises if momentum were asked
    assert config.momentum == 0.0


def test_default_space_includes_the_original_failure() -> None:
    space = SearchSpace()
    assert space.lr.low == 1e-6 and space.lr.log and "relu2" in space.head
    assert set(space.optimizer) == {"sgd", "adam", "adamw", "rmsprop"}
    assert space.momentum.high == 0.99 and space.dropout.high == 0.5


def test_toml_narrows_and_fixes_and_the_command_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        '[lr]\nlow = 1e-4\nhigh = 1e-2\n[optimizer]\nchoices = ["adam"]\n[head]\nvalue = "abs"\n[dropout]\nvalue = 0.2\n'
    )
    space = load_space(path, {"dropout": 0.4})
    assert space.lr.low == 1e-4 and space.optimizer == ("adam",)
    trial = optuna.trial.FixedTrial({"lr": 1e-3, "optimizer": "adam"})
    config = suggest_config(trial, BASE, space)
    assert config.head == "abs" and config.dropout == 0.4


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[lr]\nlow = 1\nhigh = 0.1\n", "low < high"),
        ('[head]\nchoices = ["relu9"]\n', "relu9"),
        ("[batch]\nvalue=3\n", "unknown"),
        ('lr = "abc"\n', "expected a table"),
        ("[lr]\nlo = 1e-4\n", r"unknown key\(s\) \['lo'\]"),
        ('[optimizer]\nchoices = "adam"\n', "expected a list"),
        ('[head]\nvalue = "foo"\n', "relu2/abs/sq/contrastive, got 'foo'"),
        ("[lr]\nvalue = -1.0\n", "positive"),
        ('[lr]\nvalue = "abc"\n', "expected a number"),
        ("[lr]\nvalue = true\n", "expected a number"),
        ('[lr]\nlog = "yes"\n', "expected true or false"),
        ("[lr]\nvalue = 1e-3\nlow = 1e-5\nhigh = 1e-1\n", "value fixes it, so high, low would"),
        ('[head]\nvalue = "sq"\nchoices = ["abs"]\n', r"\[head\] value fixes it, so choices"),
    ],
)
def test_bad_space_files_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_space(path, {})
