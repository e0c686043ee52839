"""What a checkpoint holds, and loading it back bit-exactly.

A checkpoint directory (written atomically by ``store.py``) holds:

=============================== ==========================================================
``model.safetensors``           the model's ``state_dict`` (tied tensors stored once)
``config.json``                 model class and config, task settings, tied-weight aliases
``tokenizer.json``              the task's tokenizer, when it has one
``trainer_state.json``          step, epoch, best metric, history, the train config
``training_state.safetensors``  optimizer / scheduler / RNG tensors ...
``training_state.json``         ... and the rest of that state (for an exact resume)
``manifest.json``               SHA-256 and size of every file above
=============================== ==========================================================
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from attnkit._version import __version__
from attnkit.training.serialize import dumps_json, join_tensors, split_tensors
from attnkit.training.store import (
    CheckpointError,
    RunDir,
    read_verified,
    resolve_checkpoint,
    verify_checkpoint_dir,
)
from attnkit.training.task import CheckpointExtras

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
TRAINER_STATE = "trainer_state.json"
TRAINING_TENSORS = "training_state.safetensors"
TRAINING_JSON = "training_state.json"
_MAX_LISTED = 8


def _json_normal(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be JSON-able: {error}") from None


def model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's config as JSON values, from ``model.config`` (a dataclass, a mapping, or an
    object with ``to_dict()``); ``None`` when the model has no ``config`` attribute.

    Raises:
        TypeError: ``model.config`` is of another kind or not JSON-able.
    """
    config = getattr(model, "config", None)
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{type(model).__name__}.config must be a dataclass, a mapping or have to_dict(); "
            f"got {type(config).__name__}"
        )
    return _json_normal(dict(config), f"{type(model).__name__}.config")


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Human-readable differences ``"field: checkpoint X, model Y"`` between two JSON configs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in current:
                out.append(f"{name}: checkpoint {saved[key]!r}, model has no such field")
            elif key not in saved:
                out.append(f"{name}: checkpoint has no such field, model {current[key]!r}")
            else:
                out.extend(config_differences(saved[key], current[key], name))
        return out
    if saved != current:
        return [f"{prefix or 'config'}: checkpoint {saved!r}, model {current!r}"]
    return []


def _alias_key(tensor: Tensor) -> tuple:
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
            tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def split_aliases(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Keep one name per tied tensor: ``(tensors, {alias: kept_name})``."""
    kept: dict[tuple, str] = {}
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name in sorted(state):
        tensor = state[name]
        key = _alias_key(tensor)
        if key in kept:
            aliases[name] = kept[key]
        else:
            kept[key] = name
            tensors[name] = tensor.detach().cpu().contiguous()
    return tensors, aliases


def checkpoint_files(
    model: nn.Module,
    *,
    extras: CheckpointExtras | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The files of a checkpoint of ``model``, as bytes (see the module doc).

    Raises:
        TypeError: a config, extras or state that is not JSON-able.
    """
    extras = extras if extras is not None else CheckpointExtras()
    if not isinstance(extras, CheckpointExtras):
        raise TypeError(f"extras must be a CheckpointExtras, got {type(extras).__name__}")
    if extras.tokenizer_json is not None and not isinstance(extras.tokenizer_json, str):
        raise TypeError(
            f"CheckpointExtras.tokenizer_json must be str, got {type(extras.tokenizer_json)}"
        )
    tensors, aliases = split_aliases(model.state_dict())
    config = {
        "attnkit_version": __version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model": model_config(model),
        "task": _json_normal(extras.config, "CheckpointExtras.config"),
        "weight_aliases": aliases,
    }
    files = {
        WEIGHTS: save_safetensors(tensors, metadata={"format": "pt"}),
        CONFIG: dumps_json(config),
        TRAINER_STATE: dumps_json(_json_normal(dict(trainer_state or {}), "trainer_state")),
    }
    if extras.tokenizer_json is not None:
        files[TOKENIZER] = extras.tokenizer_json.encode("utf-8")
    if training_state is not None:
        json_part, state_tensors = split_tensors(dict(training_state))
        files[TRAINING_JSON] = dumps_json(json_part)
        files[TRAINING_TENSORS] = save_safetensors(state_tensors)
    return files


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    model: nn.Module,
    *,
    step: int = 0,
    best: bool = False,
    extras: CheckpointExtras | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` into ``run_dir`` and point ``run_dir/last`` at it
    (and ``run_dir/best`` when ``best``). Returns the checkpoint directory.

    Raises:
        TypeError: see :func:`checkpoint_files`.
        OSError: the disk refused; no partial checkpoint is left and the pointers are unchanged.
    """
    files = checkpoint_files(
        model, extras=extras, trainer_state=trainer_state, training_state=training_state
    )
    return RunDir(run_dir).save(step, files, best=best)


def _load_tensors(data: bytes) -> dict[str, Tensor]:
    return {name: tensor.clone() for name, tensor in load_safetensors(data).items()}


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint directory. Build it with :func:`load_checkpoint`.

    Attributes:
        path: the checkpoint directory.
        manifest: its parsed ``manifest.json``.
        config: its parsed ``config.json``.
        trainer_state: its parsed ``trainer_state.json``.
        tokenizer_json: the text of ``tokenizer.json``, or ``None``.
    """

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    trainer_state: dict[str, Any]
    tokenizer_json: str | None

    @property
    def model_config(self) -> dict[str, Any] | None:
        """The config of the model that was saved (``None`` if it had none)."""
        return self.config.get("model")

    @property
    def task_config(self) -> dict[str, Any]:
        """The task settings saved beside the model."""
        return self.config.get("task", {})

    def _read(self, name: str) -> bytes:
        return read_verified(self.path, name, self.manifest)

    def state_dict(self) -> dict[str, Tensor]:
        """The saved weights, tied names included, as CPU tensors.

        Raises:
            CheckpointError: ``model.safetensors`` changed since it was verified or is unreadable.
        """
        data = self._read(WEIGHTS)
        try:
            tensors = _load_tensors(data)
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"{self.path / WEIGHTS} is corrupted: {error}") from None
        for alias, kept in self.config.get("weight_aliases", {}).items():
            tensors[alias] = tensors[kept]
        return tensors

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model whose config differs from the saved one, naming the differing fields.

        Nothing is compared when either side has no config (``load_into`` still checks the
        weights' names and shapes).

        Raises:
            CheckpointError: the model configs differ (each differing field named).
        """
        saved, current = self.model_config, model_config(model)
        if saved is not None and current is not None:
            differences = config_differences(saved, current)
            if differences:
                raise CheckpointError(
                    f"checkpoint {self.path} holds a {self.config.get('model_class')} with a "
                    f"different config than this {type(model).__name__}: "
                    + "; ".join(differences)
                )

    def load_into(self, model: nn.Module) -> None:
        """Copy the saved weights into ``model`` (bit-exact when dtypes agree).

        Raises:
            CheckpointError: see :meth:`check_model`; also when names or shapes differ.
        """
        self.check_model(model)
        tensors = self.state_dict()
        expected = model.state_dict()
        problems = []
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing:
            problems.append(f"missing from the checkpoint: {missing[:_MAX_LISTED]}")
        if unexpected:
            problems.append(f"not in the model: {unexpected[:_MAX_LISTED]}")
        shapes = [
            f"{name}: checkpoint {tuple(tensors[name].shape)}, model {tuple(expected[name].shape)}"
            for name in sorted(set(expected) & set(tensors))
            if tensors[name].shape != expected[name].shape
        ]
        if shapes:
            problems.append("shapes differ: " + "; ".join(shapes[:_MAX_LISTED]))
        if problems:
            raise CheckpointError(
                f"checkpoint {self.path} does not fit {type(model).__name__}: "
                + " | ".join(problems)
            )
        with torch.no_grad():
            model.load_state_dict(tensors, strict=True)

    def training_state(self) -> dict[str, Any] | None:
        """Optimizer, scheduler and RNG state for a resume, or ``None`` if not saved.

        Raises:
            CheckpointError: a training-state file changed since it was verified.
        """
        if TRAINING_JSON not in self.manifest["files"]:
            return None
        json_part = json.loads(self._read(TRAINING_JSON))
        tensors = _load_tensors(self._read(TRAINING_TENSORS))
        return join_tensors(json_part, tensors)


def _parse_json(path: Path, name: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(read_verified(path, name, manifest))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path / name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path / name} must hold a JSON object, got {type(value).__name__}")
    return value


def load_best_checkpoint(run: str | os.PathLike[str]) -> Checkpoint:
    """What a user means by a trained run: a run folder's ``best`` checkpoint (its ``last``
    when it has none), or the pointer or checkpoint directory given.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`load_checkpoint`.
    """
    path = Path(run)
    return load_checkpoint(path / "best" if (path / "best").exists() else path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open and verify a checkpoint: every file's size and SHA-256 against ``manifest.json``.

    Args:
        path: a checkpoint directory, a ``last``/``best`` pointer, or a run directory (its
            ``last`` checkpoint).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: a file is missing, truncated or corrupted (the file is named), or the
            directory is not an attnkit checkpoint.
    """
    directory = resolve_checkpoint(path)
    manifest = verify_checkpoint_dir(directory)
    for required in (WEIGHTS, CONFIG, TRAINER_STATE):
        if required not in manifest["files"]:
            raise CheckpointError(f"{directory} lacks {required} (not in its manifest)")
    tokenizer = None
    if TOKENIZER in manifest["files"]:
        tokenizer = read_verified(directory, TOKENIZER, manifest).decode("utf-8")
    return Checkpoint(
        path=directory,
        manifest=manifest,
        config=_parse_json(directory, CONFIG, manifest),
        trainer_state=_parse_json(directory, TRAINER_STATE, manifest),
        tokenizer_json=tokenizer,
    )
