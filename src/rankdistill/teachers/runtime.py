"""Device and dtype choices for inference: ``auto`` means the fastest safe choice on the machine."""

from __future__ import annotations

import torch

from rankdistill.errors import UserInputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto``/``None`` -> ``cuda`` when available, else ``mps``, else ``cpu``; otherwise the named device."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserInputError(f"unknown device {device!r} ({e})", fix="use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} requested but CUDA is not available",
                             fix="use --device cpu or auto")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on a CUDA GPU that supports it (else float16), float32 elsewhere."""
    if dtype in (None, "", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise UserInputError(f"unknown dtype {dtype!r}", fix=f"use auto or one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
