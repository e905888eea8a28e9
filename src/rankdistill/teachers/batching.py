"""Length-sorted batching of pre-tokenised pairs, the padding saver of the scoring engine.

Transformer cost grows with the padded length of a batch, so pairs are sorted by token count (longest first:
an out-of-memory error shows up on the first batch, not after an hour) and cut into consecutive batches;
each batch is padded only to its own longest member (optionally rounded up to a multiple of 8, which suits
GPU tensor cores). Pure numpy; no model or tokenizer needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PaddedBatch:
    """One batch: positions of its pairs in the chunk, and padded ``[batch, length]`` int64 arrays."""

    index: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices of the pairs, longest first (ties in input order), cut into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padded_tokens(lengths: Sequence[int] | np.ndarray, batches: Sequence[np.ndarray], multiple_of: int = 1) -> int:
    """Total tokens processed (real + padding) when each batch is padded to its longest member."""
    lens = np.asarray(lengths, dtype=np.int64)
    total = 0
    for b in batches:
        width = int(lens[b].max())
        width = -(-width // multiple_of) * multiple_of
        total += width * len(b)
    return total


def padded_width(longest: int, multiple_of: int, limit: int | None = None) -> int:
    """The width a batch whose longest sequence has ``longest`` tokens is padded to: rounded up to a multiple
    of ``multiple_of`` (tensor cores, fewer shapes), but not past ``limit``, the token limit the sequences were
    cut to (a model whose position table is no multiple of 8 has no room beyond it), and never below
    ``longest``."""
    width = -(-longest // multiple_of) * multiple_of
    return width if limit is None else max(longest, min(width, limit))


def pad_batch(index: np.ndarray, input_ids: Sequence[np.ndarray], token_type_ids: Sequence[np.ndarray] | None,
              pad_id: int, multiple_of: int = 1, limit: int | None = None) -> PaddedBatch:
    """Pad the sequences at ``index`` to the batch's longest (rounded up to ``multiple_of``, but not past
    ``limit``, the token limit the pairs were cut to)."""
    seqs = [input_ids[i] for i in index]
    width = padded_width(max(len(s) for s in seqs), multiple_of, limit)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    types = np.zeros((len(seqs), width), dtype=np.int64) if token_type_ids is not None else None
    for row, (i, s) in enumerate(zip(index, seqs)):
        ids[row, :len(s)] = s
        mask[row, :len(s)] = 1
        if types is not None and token_type_ids is not None:
            types[row, :len(s)] = token_type_ids[i]
    return PaddedBatch(np.asarray(index), ids, mask, types)
