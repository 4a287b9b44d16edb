"""User-facing errors: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (config, flag, data, model path). Never a bug of ours."""


class ConfigError(UserError):
    """One or more config problems, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))
