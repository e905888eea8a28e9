"""The tokenised input every model takes: padded token ids, attention mask and optional segment ids."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of token sequences, ``[N, L]`` each (``token_type_ids`` only for models that use them)."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword arguments for a Hugging Face model's ``forward``."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return TokenBatch(move(self.input_ids), move(self.attention_mask), move(self.token_type_ids))  # type: ignore[arg-type]

    def pin_memory(self) -> TokenBatch:
        """Page-locked copy, used by ``torch.utils.data.DataLoader(pin_memory=True)``."""
        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return TokenBatch(pin(self.input_ids), pin(self.attention_mask), pin(self.token_type_ids))  # type: ignore[arg-type]
