"""Checkpoints: atomic saving, ``weights_only`` loading, RNG state capture and model rebuilding.

A checkpoint is a dict of tensors and plain Python values only (so ``torch.load(...,
weights_only=True)`` can read it)::

    model, optimizer, scheduler, criterion, scaler   state dicts (criterion: the loss's refresh state)
    rng            list, one entry per rank: {"python", "numpy", "torch", "cuda"}
    iteration      completed training iterations
    config         the full training config (nested dict, see esseg.engine.config)
    model_config   model.config: the create_model kwargs that rebuild the network
    class_names, palette (uint8 (C, 3) tensor or None), ignore_index
    best_mIoU, metrics (summary of the latest evaluation or None), esseg_version
    class_frequency  training images per class (list of C ints) or None (esseg.data.frequency)
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import torch

from esseg._io import atomic_write
from esseg.engine.config import short_repr
from esseg.errors import CheckpointError, ConfigError, EssegError
from esseg.models import create_model


def rng_state() -> dict:
    """The python, numpy, torch (and CUDA) RNG states as checkpoint-safe values."""
    key, state, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": key, "state": torch.from_numpy(state.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_UNSAFE = "WeightsUnpickler error:"


def _load_error(err: BaseException) -> str:
    """One plain line about why ``torch.load(weights_only=True)`` failed, without torch's advice.

    torch suggests ``weights_only=False`` or allowlisting the file's globals: both would run code
    from a possibly hostile file, so only the reason is kept. Escape sequences and other control
    characters (which a crafted file can put into the message) are removed.
    """
    text = _ANSI.sub("", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unsafe = [line for line in lines if line.startswith(_UNSAFE)]
    if unsafe:  # a pickle that needs more than tensors and plain values
        reason = unsafe[0][len(_UNSAFE):].split(" Please use", 1)[0].strip().rstrip(".")
        reason = f"it holds objects other than tensors and plain values ({reason})"
    else:
        reason = lines[0] if lines else type(err).__name__
    reason = "".join(ch if ch.isprintable() else "?" for ch in reason)
    return reason if len(reason) <= 300 else reason[:297] + "..."


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, never runs code
    from the file); an unreadable file raises a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated file, a foreign pickle, ...
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_load_error(err)}; esseg reads only checkpoints written by esseg train"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path} is not an esseg checkpoint (written by esseg train)")
    return ckpt


def plain(value):
    """``value`` as JSON-like plain data (tuples become lists); raises on anything else."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as err:
        raise CheckpointError(f"cannot store {short_repr(value)} in a checkpoint: {err}") from None


def create_model_checked(**kwargs) -> torch.nn.Module:
    """``esseg.create_model(**kwargs)`` with library errors turned into one-line ConfigErrors."""
    try:
        return create_model(**kwargs)
    except EssegError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        args = ", ".join(f"{k}={short_repr(v)}" for k, v in kwargs.items())
        raise ConfigError(f"cannot build model ({args}): {str(err).strip().splitlines()[0]}") from None


MODEL_IDENTITY = ("arch", "encoder", "num_classes", "embedding_dim", "output_stride")


def check_model_matches(ckpt: dict, model_config: dict, path) -> None:
    """Raise CheckpointError if ``ckpt`` holds a different network than ``model_config`` describes."""
    saved = ckpt["model_config"]
    diff = [k for k in MODEL_IDENTITY if saved.get(k) != model_config.get(k)]
    if diff:
        have = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        want = ", ".join(f"{k}={model_config.get(k)!r}" for k in diff)
        raise CheckpointError(f"checkpoint {path} holds a model with {have} but the config asks for {want}; use a matching checkpoint or another --out")


def load_model_state(model: torch.nn.Module, state: dict, path) -> None:
    """``model.load_state_dict(state)`` with a one-line CheckpointError on any mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"checkpoint {path} does not fit the model: {detail}") from None


def model_from_checkpoint(ckpt: dict, path="checkpoint", device="cpu") -> torch.nn.Module:
    """Rebuild the network stored in ``ckpt`` (no pretrained download) and load its weights, in eval mode."""
    kwargs = dict(ckpt["model_config"])
    kwargs["encoder_weights"] = None  # the weights come from the checkpoint
    model = create_model_checked(**kwargs)
    load_model_state(model, ckpt["model"], path)
    return model.to(device).eval()


__all__ = [
    "check_model_matches", "create_model_checked", "load_checkpoint", "load_model_state",
    "model_from_checkpoint", "plain", "rng_state", "save_checkpoint", "set_rng_state",
]
