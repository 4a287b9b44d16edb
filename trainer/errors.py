"""User-facing errors: every command prints them as one line, `trainer: error: ...`, and exits with 2."""

from __future__ import annotations

import argparse
import sys

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix (config, flag, data, model path). Never a bug of ours."""


class ConfigError(UserError):
    """One or more config problems, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def report(message: str) -> int:
    """Print the one line of a user error and return the exit status for it."""
    sys.stderr.write(f"trainer: error: {message}\n")
    return USER_ERROR_EXIT


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (not the usage text plus the message)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(report(f"{message} (see {self.prog} --help)"))
