"""Errors that mean "the user gave bad input": the CLI prints them as one line, exit 2."""


class SiameseInputError(Exception):
    """Bad usage or bad input; the message names the file, flag or value and what was expected."""


class DataError(SiameseInputError):
    """The data cannot be trained on (found before any training starts)."""


class ConfigError(SiameseInputError):
    """A configuration value is invalid."""


class CheckpointError(SiameseInputError):
    """A checkpoint file is missing, corrupt, unsafe or from another program."""
