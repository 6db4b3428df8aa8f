"""A resumed study keeps the settings it was created with: flags that would change them are
refused, not silently ignored.

`siamese-lab search --study S --head relu2` on an existing S used to print "resumed, with its
stored space and base config" and train with the stored head: the user's flag vanished.
Now a flag the user typed that differs from the study's stored value is bad input naming
it; the same flag with the same value (the same command again, to add trials) is fine.
`--device` is not a study setting: each worker may have its own.
"""

from __future__ import annotations

import json
from typing import Any

from search.setup import StudySetup
from search.space import SPACE_PARAMS
from siamese.errors import SiameseInputError

# The setup's own fields a flag sets directly.
SETUP_FIELDS = ("sampler", "pruner", "experiment")
SPACE_FILE = "space_file"


def check_unchanged(
    study: str, stored: StudySetup, asked: StudySetup, typed: dict[str, str]
) -> None:
    """`typed`: parameter name -> the flag as the user typed it (--train-pairs)."""
    changed = [flag for name, flag in typed.items() if _value(stored, name) != _value(asked, name)]
    if changed:
        raise SiameseInputError(
            f"--study {study}: it exists, and {', '.join(changed)} differ from the settings it "
            "was created with (a study keeps its space, base config, sampler, pruner and MLflow "
            "experiment); "
            "drop them to add trials to it, or name a new --study"
        )


def _value(setup: StudySetup, name: str) -> Any:
    if name in SETUP_FIELDS:
        value: Any = getattr(setup, name)
    elif name == SPACE_FILE:  # ranges and choices; what it fixes is compared as well
        value = setup.space
    elif name in SPACE_PARAMS:
        value = setup.space["fixed"].get(name)
    elif name in setup.base:
        value = setup.base[name]
    else:
        value = setup.base["data"].get(name)
    return json.loads(json.dumps(value))  # as stored: lists, not tuples
