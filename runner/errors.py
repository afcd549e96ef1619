"""Errors the CLI turns into one line on stderr and exit code 1 (never a traceback)."""


class Hw3Error(Exception):
    """A user's mistake or a problem with their environment, explained in one line."""


class ConfigError(Hw3Error):
    """A config key or value that cannot be used; raised before any work starts."""


class DataError(Hw3Error):
    """Data that is missing or malformed; the message names the file and the fix."""


class RunInterrupted(Hw3Error):
    """Ctrl-C or SIGTERM stopped a run; its checkpoint was saved and it is marked KILLED."""

    exit_code = 130


class RunFailed(Hw3Error):
    """A run stopped on an error (a non-finite loss, a plugin exception); marked FAILED."""
