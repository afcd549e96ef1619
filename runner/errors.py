"""Errors the CLI turns into one line on stderr and exit code 1 (never a traceback), and the
"did you mean" helpers their messages use."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Hw3Error(Exception):
    """A user's mistake or a problem with their environment, explained in one line."""


class ConfigError(Hw3Error):
    """A config key or value that cannot be used; raised before any work starts."""


class DataError(Hw3Error):
    """Data that is missing or malformed; the message names the file and the fix."""


class RunInterrupted(Hw3Error):
    """Ctrl-C or SIGTERM stopped a run; its checkpoint was saved and it is marked KILLED."""

    exit_code = 130
    run_id = ""  # the interrupted run, to resume


class RunFailed(Hw3Error):
    """A run stopped on an error (a non-finite loss, a plugin exception); marked FAILED."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choices_hint(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?); choose from: a, b, c`, for the end of an error message."""
    choices = sorted(choices)
    return f"{did_you_mean(word, choices)}; choose from: {', '.join(choices) or '(none)'}"


class MadeElsewhere(Hw3Error):
    """A suite's run that another process (another `hw3 reproduce`) started first; this one stood down."""

    def __init__(self, run_id: str, where: str) -> None:
        super().__init__(f"run {run_id} makes it ({where or 'another process'})")
        self.run_id, self.where = run_id, where
