"""Tokenise once, pad late: token-id caches and collation with dynamic padding.

Every text (query or document) is tokenised once, without special tokens, into a cache of int32 arrays.
A batch is assembled from the cached ids: special tokens are added from the tokenizer's own template
(:class:`InputTemplate`, read off the tokenizer so that any model's ``[CLS] a [SEP] b [SEP]`` or
``<s> a </s></s> b </s>`` layout is reproduced exactly), and the batch is padded to its longest sequence,
rounded up to a multiple of ``pad_multiple`` (fewer distinct shapes for ``torch.compile`` and tensor cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from rankdistill.models.inputs import TokenBatch
from rankdistill.models.tokenize import tokenize_parallel
from rankdistill.teachers.batching import padded_width

logger = logging.getLogger(__name__)


def _find(seq: Sequence[int], sub: Sequence[int], start: int = 0) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if list(seq[i:i + len(sub)]) == list(sub):
            return i
    return -1


def longest_first_lengths(a: int, b: int, room: int) -> tuple[int, int]:
    """Lengths kept of two texts of ``a`` and ``b`` tokens under ``longest_first`` truncation to ``room``
    tokens, as the ``tokenizers`` library does it: when cutting the longer text down is enough, only it is cut;
    otherwise both keep half the room, the longer one (the second on a tie) the odd token."""
    if a + b <= room:
        return a, b
    if min(a, b) <= room - max(a, b) or abs(a - b) >= a + b - room:
        return (room - b, b) if a > b else (a, room - a)
    low, high = room // 2, room - room // 2
    return (high, low) if a > b else (low, high)


@dataclass(frozen=True)
class InputTemplate:
    """Where a tokenizer puts its special tokens around one text and around a pair, and the segment ids."""

    single_prefix: tuple[int, ...]
    single_suffix: tuple[int, ...]
    pair_prefix: tuple[int, ...]
    pair_middle: tuple[int, ...]
    pair_suffix: tuple[int, ...]
    first_type: int
    second_type: int
    uses_token_types: bool

    @classmethod
    def from_tokenizer(cls, tokenizer) -> InputTemplate:
        """Read the template off the tokenizer by encoding two probe texts with and without specials."""
        a_text, b_text = "alpha", "beta"
        a = tokenizer(a_text, add_special_tokens=False)["input_ids"]
        b = tokenizer(b_text, add_special_tokens=False)["input_ids"]
        single = tokenizer(a_text)["input_ids"]
        pair_enc = tokenizer(a_text, b_text, return_token_type_ids=True)
        pair = pair_enc["input_ids"]
        types = pair_enc.get("token_type_ids") or [0] * len(pair)
        i = _find(single, a)
        pa = _find(pair, a)
        pb = _find(pair, b, pa + len(a)) if pa >= 0 else -1
        if min(i, pa, pb) < 0:
            raise ValueError(f"cannot read the special-token template of {type(tokenizer).__name__}")
        return cls(
            single_prefix=tuple(single[:i]), single_suffix=tuple(single[i + len(a):]),
            pair_prefix=tuple(pair[:pa]), pair_middle=tuple(pair[pa + len(a):pb]),
            pair_suffix=tuple(pair[pb + len(b):]), first_type=int(types[pa]), second_type=int(types[pb]),
            uses_token_types="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
        )

    @property
    def single_specials(self) -> int:
        return len(self.single_prefix) + len(self.single_suffix)

    @property
    def pair_specials(self) -> int:
        return len(self.pair_prefix) + len(self.pair_middle) + len(self.pair_suffix)

    def single(self, ids: Sequence[int], max_length: int) -> list[int]:
        """``prefix + ids + suffix``, the content cut to fit ``max_length``."""
        room = max(0, max_length - self.single_specials)
        return [*self.single_prefix, *ids[:room], *self.single_suffix]

    def pair(self, first: Sequence[int], second: Sequence[int], max_length: int, truncation: str = "only_second"
             ) -> tuple[list[int], list[int]]:
        """Ids and segment ids of ``prefix + first + middle + second + suffix`` cut to ``max_length``.

        ``only_second`` cuts the second text first, then the first if it alone does not fit;
        ``longest_first`` (the tokenizers' default for pairs) takes tokens off the longer text first: see
        :func:`longest_first_lengths`.
        """
        room = max(0, max_length - self.pair_specials)
        if truncation == "longest_first":
            n1, n2 = longest_first_lengths(len(first), len(second), room)
            first, second = first[:n1], second[:n2]
        else:
            first = first[:room]
            second = second[:max(0, room - len(first))]
        head = [*self.pair_prefix, *first, *self.pair_middle]
        tail = [*second, *self.pair_suffix]
        return head + tail, [self.first_type] * len(head) + [self.second_type] * len(tail)


MEMO_LIMIT = 20_000_000
"""Token ids the process-wide memo of :class:`TokenCache` keeps (about 40-80 MB) before starting afresh."""

_MEMO: dict[tuple[str, int], dict[str, np.ndarray]] = {}
_MEMO_TOKENS = [0]


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of a fast tokenizer's whole definition (vocabulary, normaliser, ...): two tokenizers loaded
    from different folders (every trained student saves its own copy) with the same digest tokenise alike."""
    cached = getattr(tokenizer, "_rankdistill_fingerprint", None)
    if cached is not None:
        return cached
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else f"{type(tokenizer).__name__}:{tokenizer.name_or_path}"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    with contextlib.suppress(AttributeError):
        tokenizer._rankdistill_fingerprint = digest
    return digest


def clear_token_memo() -> None:
    """Forget every memoised tokenisation of this process."""
    _MEMO.clear()
    _MEMO_TOKENS[0] = 0


class TokenCache:
    """Token ids (no special tokens) of texts by key, each tokenised once and cut to ``max_tokens``.

    All ids live in one growing flat array (``uint16`` when the vocabulary fits, else ``int32``) indexed by
    ``key -> (start, length)``, so millions of passages cost about two bytes per token plus the index.

    Tokenisations are also memoised for the process, by tokenizer definition, token limit and text: the
    cells a study runs one after another in a worker process (train, then re-rank four test collections)
    tokenise the same corpora with the same tokenizer, and only the first one pays (up to ``MEMO_LIMIT``
    tokens, then the memo starts afresh).
    """

    def __init__(self, tokenizer, max_tokens: int, name: str = "texts") -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.name = name
        vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else getattr(tokenizer, "vocab_size", 1 << 31)
        self._dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32
        self._buf = np.zeros(0, dtype=self._dtype)
        self._used = 0
        self._index: dict[str, tuple[int, int]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, key: str) -> np.ndarray:
        start, n = self._index[key]
        return self._buf[start:start + n]

    def length(self, key: str) -> int:
        return self._index[key][1]

    @property
    def tokens(self) -> int:
        """Token ids stored."""
        return self._used

    def _append(self, key: str, ids: Sequence[int]) -> None:
        n = len(ids)
        if self._used + n > self._buf.shape[0]:
            grown = np.zeros(max(1024, 2 * (self._used + n)), dtype=self._dtype)
            grown[:self._used] = self._buf[:self._used]
            self._buf = grown
        self._buf[self._used:self._used + n] = ids
        self._index[key] = (self._used, n)
        self._used += n

    def take(self, other: TokenCache, keys: Iterable[str]) -> list[str]:
        """Copy the ids of ``keys`` that ``other`` holds (same tokenizer and limit); returns the keys it lacks."""
        if (other.max_tokens, tokenizer_fingerprint(other.tokenizer)) != (
                self.max_tokens, tokenizer_fingerprint(self.tokenizer)):
            raise ValueError("the caches tokenise differently")
        lacking = []
        for key in keys:
            if key in self._index:
                continue
            if key in other:
                self._append(key, other[key])
            else:
                lacking.append(key)
        return lacking

    def add(self, items: Iterable[tuple[str, str]], batch_size: int = 2048, progress: bool = True,
            total: int | None = None) -> int:
        """Tokenise the ``(key, text)`` pairs whose key is not cached yet; returns how many were added.

        ``items`` is read a few batches at a time, so that only those batches' texts are in memory (every
        document of MS MARCO's training pools at once would be several GB); ``total`` (the number of items,
        when known) sizes the progress bar."""
        bar = tqdm(total=total, desc=f"tokenising {self.name}", unit=" texts", disable=not progress or None,
                   leave=False, mininterval=1.0)
        it = iter(items)
        added = 0
        while True:
            window = list(itertools.islice(it, 8 * batch_size))
            if not window:
                break
            added += self._add_window(window, batch_size)
            bar.update(len(window))
        bar.close()
        return added

    def _add_window(self, items: list[tuple[str, str]], batch_size: int) -> int:
        todo: dict[str, str] = {}
        for key, text in items:
            if key not in self._index and key not in todo:
                todo[key] = text
        memo = _MEMO.setdefault((tokenizer_fingerprint(self.tokenizer), self.max_tokens), {})
        keys = []
        for key, text in todo.items():
            ids = memo.get(text)
            if ids is None:
                keys.append(key)
            else:
                self._append(key, ids)
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            enc = tokenize_parallel(self.tokenizer, [todo[k] for k in chunk], add_special_tokens=False,
                                    truncation=True, max_length=self.max_tokens)["input_ids"]
            if _MEMO_TOKENS[0] > MEMO_LIMIT:
                clear_token_memo()
                memo = _MEMO.setdefault((tokenizer_fingerprint(self.tokenizer), self.max_tokens), {})
            for k, ids in zip(chunk, enc):
                self._append(k, ids)
                memo[todo[k]] = self[k].copy()
                _MEMO_TOKENS[0] += len(ids)
        return len(todo)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, types: Sequence[Sequence[int]] | None = None,
              pad_multiple: int = 8, with_types: bool = False, limit: int | None = None) -> TokenBatch:
    """Right-pad to the longest sequence (rounded up to ``pad_multiple``, but not past ``limit``, the token
    limit the sequences were cut to: a model whose position table is no multiple of 8 has no room beyond it)
    into a :class:`TokenBatch`."""
    longest = padded_width(max(len(s) for s in sequences), max(1, pad_multiple), limit)
    n = len(sequences)
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    tt = np.zeros((n, longest), dtype=np.int64) if with_types else None
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq  # uint16/int32 cached ids widen to int64 here
        mask[row, :len(seq)] = 1
        if tt is not None and types is not None:
            tt[row, :len(seq)] = types[row]
    return TokenBatch(torch.from_numpy(ids), torch.from_numpy(mask), None if tt is None else torch.from_numpy(tt))


def encode_singles(template: InputTemplate, cache: TokenCache, keys: Sequence[str], max_length: int,
                   pad_id: int, pad_multiple: int = 8) -> TokenBatch:
    """Single-text inputs (bi-encoder queries or documents) for cached ``keys``."""
    seqs = [template.single(cache[k], max_length) for k in keys]
    return pad_batch(seqs, pad_id, pad_multiple=pad_multiple, with_types=False, limit=max_length)


def encode_pairs(template: InputTemplate, query_cache: TokenCache, doc_cache: TokenCache,
                 pairs: Sequence[tuple[str, str]], max_length: int, pad_id: int,
                 pad_multiple: int = 8) -> TokenBatch:
    """Pair inputs (cross-encoder) for cached ``(query key, doc key)`` pairs."""
    built = [template.pair(query_cache[q], doc_cache[d], max_length) for q, d in pairs]
    return pad_batch([b[0] for b in built], pad_id, types=[b[1] for b in built], pad_multiple=pad_multiple,
                     with_types=template.uses_token_types, limit=max_length)
