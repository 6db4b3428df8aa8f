"""The one rule for names that become folders, database keys or registry entries: study
names (a checkpoint folder under the home), MLflow experiment names and registered model
names. `search --study ../../esc` must not write outside the home folder."""

from __future__ import annotations

import re

from siamese.errors import ConfigError

MAX_NAME_LENGTH = 100
NAME_RULE = (
    f"expected a name of letters, digits, '.', '_' and '-' "
    f"(1-{MAX_NAME_LENGTH} characters, not starting with '.')"
)
_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


def is_valid_name(value: str) -> bool:
    """Letters, digits, '.', '_', '-'; 1-100 characters; no leading '.', no '..'. So no
    '/', '\\', control characters or spaces: safe as one path component anywhere."""
    return bool(_NAME.fullmatch(value)) and ".." not in value


def check_name(flag: str, value: str) -> str:
    """`value` if it is a safe name, else ConfigError naming the flag, the value and the rule
    (the value is shown with repr(): a newline in it stays on the one error line)."""
    if not is_valid_name(value):
        shown = repr(value) if len(value) <= 2 * MAX_NAME_LENGTH else repr(value[:40] + "...")
        raise ConfigError(f"{flag} {shown}: {NAME_RULE}")
    return value
