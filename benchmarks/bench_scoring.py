"""End-to-end teacher scoring throughput: rankdistill's engine against ``sentence_transformers.CrossEncoder``.

Usage: python benchmarks/bench_scoring.py [--model DIR] [--dataset DIR] [--pairs 2000] [--max-length 224]
                                          [--batch-size N] [--device auto] [--peer-dtypes float32 bfloat16]
                                          [--repeats 2] [--threads N] [--json OUT]

Both sides start from the same (query id, doc id) pairs and end with every score in a fresh score store, on
the same model, texts and device, in one process:

- rankdistill: ``score_pairs`` (texts fetched and tokenised a chunk at a time in a background thread,
  length-sorted batches, ``torch.inference_mode``, bfloat16/float16 on a GPU, one commit per batch);
- peer: texts fetched, ``CrossEncoder.predict`` (identity activation asked for so the scores are comparable),
  then the scores written to a store in one transaction; measured once per ``--peer-dtypes`` entry (default
  float32 and bfloat16 on a GPU, float32 on a CPU), each with its own ratio;
- ceiling: the bare ``AutoModelForSequenceClassification`` forward of the same folder, in rankdistill's dtype,
  under ``torch.inference_mode``, on fixed-shape random token ids (same batch size, every sequence as long as
  the mean real token length of the benchmark's pairs, no padding), no texts, tokeniser or store: what no
  pipeline beats. rankdistill's pairs/s over it is ``fraction_of_ceiling``.

Model loading is outside the timed region for all, and each gets a short warm-up first. The sides alternate
for ``--repeats`` rounds and the best time of each is kept, so a change in machine load does not favour one of
them. Without ``--model`` the bundled all-MiniLM-L6-v2 is loaded as a cross-encoder backbone with a randomly
initialised one-logit head (seeded; fine for speed, meaningless as scores), saved once to a temporary folder so
every side loads the very same weights. The score agreement of the sides is reported as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("bench_scoring")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"


def bundled_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Save the bundled MiniLM-L6 backbone with a seeded random one-logit head as a cross-encoder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rankdistill.models import resolve_model

    src = resolve_model(None)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    return folder


def make_pairs(dataset, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` unique (query, doc) pairs: train queries in file order, each with documents drawn uniformly."""
    rng = np.random.default_rng(seed)
    queries = list(dataset.queries("train"))
    ids = dataset.corpus.ids()
    per_query = max(1, -(-n // len(queries)))
    pairs: list[tuple[str, str]] = []
    for q in queries:
        for i in rng.choice(len(ids), size=min(per_query, len(ids)), replace=False):
            pairs.append((q, ids[int(i)]))
            if len(pairs) == n:
                return pairs
    return pairs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Ceiling:
    """The bare cross-encoder forward on fixed-shape random token ids: ``n_pairs`` pairs in batches of
    ``batch`` (the last one shorter, as the real run's), every sequence ``length`` tokens, no padding."""

    def __init__(self, model_dir: Path, device: torch.device, dtype: torch.dtype, batch: int, n_pairs: int,
                 length: int, token_types: bool, seed: int = 0) -> None:
        from transformers import AutoModelForSequenceClassification

        self.device = device
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=1, dtype=dtype).to(device).eval()
        vocab = int(self.model.config.vocab_size)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(min(1000, vocab - 1), vocab, (min(batch, n_pairs), length), generator=gen)
        full = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if token_types:
            full["token_type_ids"] = torch.zeros_like(ids)
        self.full = {k: v.to(device) for k, v in full.items()}
        self.n_full, rest = divmod(n_pairs, batch)
        self.rest = {k: v[:rest] for k, v in self.full.items()} if rest else None
        self.length, self.batch, self.n_pairs = length, batch, n_pairs

    @torch.inference_mode()
    def warm_up(self) -> None:
        self.model(**self.full)
        sync(self.device)

    @torch.inference_mode()
    def run(self) -> float:
        """Seconds for all ``n_pairs`` forwards."""
        t0 = time.perf_counter()
        for _ in range(self.n_full):
            self.model(**self.full)
        if self.rest is not None:
            self.model(**self.rest)
        sync(self.device)
        return time.perf_counter() - t0

    def close(self) -> None:
        del self.model, self.full, self.rest


def default_peer_dtypes(device: torch.device) -> list[str]:
    return ["float32", "bfloat16"] if device.type == "cuda" else ["float32"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="cross-encoder directory (default: bundled MiniLM-L6 + random head)")
    p.add_argument("--dataset", default=str(DEFAULT_DATA), help="BEIR folder with a train split (default SciFact)")
    p.add_argument("--pairs", type=int, default=2000, help="unique pairs to score (default 2000)")
    p.add_argument("--max-length", type=int, default=224, help="token limit (default 224)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size of every side (default 32 CPU, 512 GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--dtype", default="auto", help="rankdistill's (and the ceiling's) dtype (auto: bf16/fp16 on "
                                                   "GPU, fp32 on CPU)")
    p.add_argument("--peer-dtypes", nargs="+", default=None, metavar="DTYPE",
                   help="dtypes the peer loads the model in, each measured in the same run "
                        "(default: float32 bfloat16 on a GPU, float32 on a CPU)")
    p.add_argument("--peer-dtype", default=None, metavar="DTYPE",
                   help="one peer dtype (same as --peer-dtypes DTYPE; kept for old command lines)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the bare-model ceiling")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side, alternating (default 2; best kept)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.peer_dtype and args.peer_dtypes:
        p.error("give --peer-dtypes or --peer-dtype, not both")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import CrossEncoder

    from rankdistill.data import load_dataset
    from rankdistill.teachers.batching import length_sorted_batches, padded_tokens
    from rankdistill.teachers.engine import CorpusTexts, score_pairs
    from rankdistill.teachers.models import TeacherConfig, load_teacher
    from rankdistill.teachers.runtime import DTYPES, dtype_name, resolve_device
    from rankdistill.teachers.store import ScoreStore
    from rankdistill.training.tokens import clear_token_memo

    device = resolve_device(args.device)
    peer_dtypes = [args.peer_dtype] if args.peer_dtype else (args.peer_dtypes or default_peer_dtypes(device))
    unknown = [d for d in peer_dtypes if d not in DTYPES]
    if unknown:
        p.error(f"unknown peer dtype(s) {', '.join(unknown)}; use {', '.join(sorted(DTYPES))}")
    distinct: dict[torch.dtype, str] = {}
    for name in peer_dtypes:  # one peer per torch dtype (fp32 and float32 are one), in the order given
        distinct.setdefault(DTYPES[name], name)
    peer_dtypes = list(distinct.values())
    batch = args.batch_size or (512 if device.type == "cuda" else 32)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA context start-up outside every timed region
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    model_dir = Path(args.model) if args.model else bundled_cross_encoder(work / "minilm-ce")
    ds = load_dataset(args.dataset)
    texts = CorpusTexts(ds.all_queries("train"), ds.corpus)
    pairs = make_pairs(ds, args.pairs)
    warm = make_pairs(ds, 64, seed=1)

    # -- rankdistill ----------------------------------------------------------------------------------------
    teacher = load_teacher(TeacherConfig(str(model_dir), kind="cross", max_length=args.max_length, batch_size=batch,
                                         device=str(device), dtype=args.dtype,
                                         allow_untrained_head=args.model is None))
    with ScoreStore(work / "warm.db") as store:
        score_pairs(teacher, warm, texts, store, show_progress=False)
    sync(device)
    ours_info = teacher.info()
    # padding saved by the length sort, and the mean real length the ceiling runs at
    tok = teacher.prepare([texts.query(q) for q, _ in pairs], [texts.doc(d) for _, d in pairs])
    real = int(tok.lengths.sum())
    mean_length = max(2, round(float(tok.lengths.mean())))
    sorted_tokens = padded_tokens(tok.lengths, length_sorted_batches(tok.lengths, batch))
    order = np.arange(len(tok.lengths))
    unsorted_tokens = padded_tokens(tok.lengths, [order[i:i + batch] for i in range(0, len(order), batch)])

    # -- peers: sentence-transformers CrossEncoder.predict, one model per dtype --------------------------------
    peers: dict[str, CrossEncoder] = {}
    for name in peer_dtypes:
        ce = CrossEncoder(str(model_dir), device=str(device), max_length=args.max_length,
                          model_kwargs={"dtype": DTYPES[name]})
        ce.predict([(texts.query(q), texts.doc(d)) for q, d in warm], batch_size=batch, show_progress_bar=False,
                   activation_fn=torch.nn.Identity())
        peers[name] = ce
    sync(device)

    # -- ceiling: the bare model on fixed shapes ---------------------------------------------------------------
    ceiling = None
    if not args.no_ceiling:
        ceiling = Ceiling(model_dir, device, teacher.dtype, batch, len(pairs), mean_length, teacher.token_types)
        ceiling.warm_up()

    # -- timed runs, alternating so that a change of machine load hits every side alike ---------------------
    ours_times: list[float] = []
    peer_times: dict[str, list[float]] = {name: [] for name in peers}
    predict_times: dict[str, list[float]] = {name: [] for name in peers}
    peer_scores: dict[str, np.ndarray] = {}
    ceiling_times: list[float] = []

    def peer_inputs() -> list[tuple[str, str]]:
        return [(texts.query(q), texts.doc(d)) for q, d in pairs]

    for rep in range(args.repeats):
        with ScoreStore(work / f"ours-{rep}.db") as store:
            # the process-wide token memo (filled by the lengths above, the warm-up and earlier rounds) would
            # spare our side the tokenising the peer does in every round: each round starts without it
            clear_token_memo()
            t0 = time.perf_counter()
            report = score_pairs(teacher, pairs, texts, store, show_progress=False)
            sync(device)
            ours_times.append(time.perf_counter() - t0)
            ours_scores = store.get_many(teacher.teacher_id, pairs)
        for name, ce in peers.items():
            with ScoreStore(work / f"peer-{name}-{rep}.db") as store:
                t0 = time.perf_counter()
                scores = ce.predict(peer_inputs(), batch_size=batch, show_progress_bar=False,
                                    activation_fn=torch.nn.Identity())
                sync(device)
                predict_times[name].append(time.perf_counter() - t0)
                store.put("peer", [(q, d, float(s)) for (q, d), s in zip(pairs, scores)])
                peer_times[name].append(time.perf_counter() - t0)
            peer_scores[name] = np.asarray(scores, dtype=np.float64)
        if ceiling is not None:
            ceiling_times.append(ceiling.run())
        logger.info("repeat %d: rankdistill %.2f s, %s%s", rep + 1, ours_times[-1],
                    ", ".join(f"sentence-transformers {n} {t[-1]:.2f} s" for n, t in peer_times.items()),
                    f", bare model {ceiling_times[-1]:.2f} s" if ceiling is not None else "")
    teacher.close()
    ours_s = min(ours_times)
    ours_pps = len(pairs) / ours_s

    ours_arr = np.array([ours_scores[p] for p in pairs])
    peer_entries: dict[str, dict] = {}
    ratios: dict[str, float] = {}
    agreement: dict[str, dict] = {}
    for name, ce in peers.items():
        peer_s, predict_s = min(peer_times[name]), min(predict_times[name])
        peer_entries[name] = {"seconds": round(peer_s, 3), "all_seconds": [round(t, 3) for t in peer_times[name]],
                              "pairs_per_second": round(len(pairs) / peer_s, 1),
                              "predict_only_pairs_per_second": round(len(pairs) / predict_s, 1),
                              "dtype": name, "loaded_dtype": dtype_name(next(ce.model.parameters()).dtype)}
        ratios[name] = round(peer_s / ours_s, 2)
        theirs = peer_scores[name]
        agreement[name] = {"max_abs_diff": float(np.abs(ours_arr - theirs).max()),
                           "pearson": float(np.corrcoef(ours_arr, theirs)[0, 1]) if len(pairs) > 1 else 1.0}
    ceiling_entry = None
    if ceiling is not None:
        ceiling_s = min(ceiling_times)
        ceiling_entry = {"seconds": round(ceiling_s, 3), "all_seconds": [round(t, 3) for t in ceiling_times],
                         "pairs_per_second": round(len(pairs) / ceiling_s, 1), "dtype": ours_info["dtype"],
                         "sequence_length": mean_length, "batch_size": batch,
                         "what": "AutoModelForSequenceClassification forward, inference_mode, fixed-shape random "
                                 "token ids at the pairs' mean real length, no padding, no data pipeline"}
        ceiling.close()
    result = {
        "benchmark": "scoring",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                    "threads": torch.get_num_threads()},
        "model": "bundled all-MiniLM-L6-v2 + random 1-logit head" if args.model is None else str(args.model),
        "dataset": str(args.dataset), "pairs": len(pairs), "max_length": args.max_length, "batch_size": batch,
        "repeats": args.repeats, "timing": "best of the repeats, sides alternating",
        "rankdistill": {"seconds": round(ours_s, 3), "all_seconds": [round(t, 3) for t in ours_times],
                        "pairs_per_second": round(ours_pps, 1), "dtype": ours_info["dtype"],
                        "scored": report.scored},
        "sentence_transformers": peer_entries,
        "ratio": ratios,
        "ratio_means": "rankdistill pairs/s over the peer's (text to stored score), per peer dtype",
        "ceiling": ceiling_entry,
        "fraction_of_ceiling": round(ours_pps / ceiling_entry["pairs_per_second"], 3) if ceiling_entry else None,
        "tokens": {"real": real, "mean_length": round(float(tok.lengths.mean()), 1),
                   "padded_length_sorted": sorted_tokens, "padded_input_order": unsorted_tokens},
        "agreement": agreement,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
