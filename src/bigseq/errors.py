"""The one exception type a user sees: the CLI prints it as a single line, never a traceback."""


class BigseqError(Exception):
    """A user-facing error (bad input, bad config, bad run directory). The message says what to fix."""


class DataError(BigseqError):
    """A data file is malformed. The message names the file, the line and the reason."""


class ConfigError(BigseqError):
    """A config value is invalid. The message names the field and what was expected."""
