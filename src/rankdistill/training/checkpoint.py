"""Checkpoints: everything a killed run needs to end with the same weights as an uninterrupted one.

``OUTPUT/checkpoints/step-NNNNNNNN/`` holds ``model.safetensors`` (the student), ``state.pt`` (optimizer,
scheduler, losses so far, elapsed time, the config fingerprint) and ``rng-rankR.pt`` (each process's torch
RNG states, for dropout). The folder is written under a temporary name and renamed when complete, so a kill
while writing leaves the previous checkpoint as the latest. Everything loads without executing code:
safetensors, and ``torch.load(weights_only=True)`` for tensors and plain containers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_dir(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def list_checkpoints(output: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, folder)``, oldest first."""
    root = checkpoints_dir(output)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / "state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(output)
    return found[-1] if found else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def staging_dir(output: str | Path, step: int) -> Path:
    return checkpoints_dir(output) / f".tmp-step-{step:08d}"


def begin(output: str | Path, step: int) -> Path:
    """Create an empty staging folder for the checkpoint of ``step`` (rank 0, before the others write)."""
    tmp = staging_dir(output, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(tmp: Path, rank: int) -> None:
    """Each process stores its RNG states into the staging folder."""
    path = tmp / f"rng-rank{rank}.pt"
    torch.save(rng_state(), path)
    _fsync(path)


def commit(output: str | Path, step: int, model: nn.Module, state: dict, keep: int) -> Path:
    """Rank 0: write model and state into the staging folder, rename it into place, prune old ones."""
    tmp = staging_dir(output, step)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():
        _fsync(f)
    final = checkpoints_dir(output) / f"step-{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with contextlib.suppress(OSError):
        fd = os.open(final.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    for _, old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.debug("checkpoint written: %s", final)
    return final


def load_state(folder: Path) -> dict:
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)


def load_weights(folder: Path, model: nn.Module) -> None:
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=True)
    if missing or unexpected:  # pragma: no cover - strict=True raises first
        raise RuntimeError(f"checkpoint {folder} does not match the model")


def load_rng(folder: Path, rank: int) -> dict | None:
    path = folder / f"rng-rank{rank}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_all(output: str | Path) -> None:
    shutil.rmtree(checkpoints_dir(output), ignore_errors=True)
