"""Model: resolve `model.name` (hub id, local folder, or a model shipped in a package) and load it."""

from __future__ import annotations

import logging
from pathlib import Path

from trainer.errors import UserError
from trainer.packages import is_package_ref, package_path

log = logging.getLogger(__name__)


def resolve_model_name(name: str) -> str:
    """A local folder path for local models; the hub id unchanged otherwise."""
    if is_package_ref(name):
        try:
            folder = package_path(name)
        except UserError as exc:
            raise UserError(f"model.name {name!r}: {exc}") from None
        return _check_folder(folder, name)
    looks_local = name.startswith(("/", "./", "../", "~")) or Path(name).exists()
    if looks_local:
        return _check_folder(Path(name).expanduser(), name)
    return name


def _check_folder(folder: Path, name: str) -> str:
    if not folder.is_dir():
        raise UserError(f"model.name {name!r}: folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise UserError(f"model.name {name!r}: {folder} has no config.json (not a transformers model folder)")
    return str(folder)


def _load_error(name: str, resolved: str, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if resolved != name or Path(resolved).is_dir():  # a local folder: say what is wrong with it
        return UserError(f"cannot load model.name {name!r} from {resolved}: {first}")
    return UserError(
        f"model {name!r} is not in the local Hugging Face cache and the hub could not be reached ({first}); "
        f"download it where there is network (hf download {name}) and set model.name to that local folder, "
        "e.g. --set model.name=/models/my-model"
    )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    resolved = resolve_model_name(name)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise _load_error(name, resolved, exc) from None


def load_model(name: str, labels: list[str]):
    from transformers import AutoModelForSequenceClassification

    resolved = resolve_model_name(name)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolved,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except (OSError, ValueError) as exc:
        raise _load_error(name, resolved, exc) from None
    # BERT-family classifiers take **kwargs, so Trainer would assume they divide the loss by the
    # number of items across gradient-accumulation steps - they do not. Without this, accumulating
    # N micro-batches yields N times the gradient of the equivalent large batch.
    model.accepts_loss_kwargs = False
    return model
