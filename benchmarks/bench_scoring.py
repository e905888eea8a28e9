"""End-to-end teacher scoring throughput: rankdistill's engine against ``sentence_transformers.CrossEncoder``.

Usage: python benchmarks/bench_scoring.py [--model DIR] [--dataset DIR] [--pairs 2000] [--max-length 224]
                                          [--batch-size N] [--device auto] [--json OUT]

Both sides start from the same (query id, doc id) pairs and end with every score in a fresh score store, on
the same model, texts and device, in one process:

- rankdistill: ``score_pairs`` (texts fetched and tokenised a chunk at a time in a background thread,
  length-sorted batches, ``torch.inference_mode``, bfloat16/float16 on a GPU, one commit per batch);
- peer: texts fetched, ``CrossEncoder.predict`` (its defaults: float32, identity activation asked for so the
  scores are comparable), then the scores written to a store in one transaction.

Model loading is outside the timed region for both, and each side gets a short warm-up first. The sides
alternate for ``--repeats`` rounds and the best time of each is kept, so a change in machine load does not
favour one of them. Without
``--model`` the bundled all-MiniLM-L6-v2 is loaded as a cross-encoder backbone with a randomly initialised
one-logit head (seeded; fine for speed, meaningless as scores), saved once to a temporary folder so both
sides load the very same weights. The score agreement of the two sides is reported as well.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="cross-encoder directory (default: bundled MiniLM-L6 + random head)")
    p.add_argument("--dataset", default=str(DEFAULT_DATA), help="BEIR folder with a train split (default SciFact)")
    p.add_argument("--pairs", type=int, default=2000, help="unique pairs to score (default 2000)")
    p.add_argument("--max-length", type=int, default=224, help="token limit (default 224)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size of both sides (default 32 CPU, 512 GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--dtype", default="auto", help="rankdistill's dtype (auto: bf16/fp16 on GPU, fp32 on CPU)")
    p.add_argument("--peer-dtype", default="float32", help="dtype the peer loads the model in (default float32)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side, alternating (default 2; best kept)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import CrossEncoder

    from rankdistill.data import load_dataset
    from rankdistill.teachers.engine import CorpusTexts, score_pairs
    from rankdistill.teachers.models import TeacherConfig, load_teacher
    from rankdistill.teachers.runtime import DTYPES, resolve_device
    from rankdistill.teachers.store import ScoreStore

    device = resolve_device(args.device)
    batch = args.batch_size or (512 if device.type == "cuda" else 32)
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
    ours_times: list[float] = []
    peer_times: list[float] = []
    predict_times: list[float] = []
    ours_info = teacher.info()
    # padding saved by the length sort
    from rankdistill.teachers.batching import length_sorted_batches, padded_tokens

    tok = teacher.prepare([texts.query(q) for q, _ in pairs], [texts.doc(d) for _, d in pairs])
    real = int(tok.lengths.sum())
    sorted_tokens = padded_tokens(tok.lengths, length_sorted_batches(tok.lengths, batch))
    order = np.arange(len(tok.lengths))
    unsorted_tokens = padded_tokens(tok.lengths, [order[i:i + batch] for i in range(0, len(order), batch)])

    # -- peer: sentence-transformers CrossEncoder.predict -------------------------------------------------------
    peer_dtype = DTYPES[args.peer_dtype]
    ce = CrossEncoder(str(model_dir), device=str(device), max_length=args.max_length,
                      model_kwargs={"torch_dtype": peer_dtype})
    ce.predict([(texts.query(q), texts.doc(d)) for q, d in warm], batch_size=batch, show_progress_bar=False,
               activation_fn=torch.nn.Identity())
    sync(device)

    # -- timed runs, alternating so that a change of machine load hits both sides alike ---------------------
    for rep in range(args.repeats):
        with ScoreStore(work / f"ours-{rep}.db") as store:
            t0 = time.perf_counter()
            report = score_pairs(teacher, pairs, texts, store, show_progress=False)
            sync(device)
            ours_times.append(time.perf_counter() - t0)
            ours_scores = store.get_many(teacher.teacher_id, pairs)
        with ScoreStore(work / f"peer-{rep}.db") as store:
            t0 = time.perf_counter()
            inputs = [(texts.query(q), texts.doc(d)) for q, d in pairs]
            scores = ce.predict(inputs, batch_size=batch, show_progress_bar=False, activation_fn=torch.nn.Identity())
            sync(device)
            predict_times.append(time.perf_counter() - t0)
            store.put("peer", [(q, d, float(s)) for (q, d), s in zip(pairs, scores)])
            peer_times.append(time.perf_counter() - t0)
        logger.info("repeat %d: rankdistill %.2f s, sentence-transformers %.2f s", rep + 1, ours_times[-1],
                    peer_times[-1])
    teacher.close()
    ours_s, peer_s, predict_s = min(ours_times), min(peer_times), min(predict_times)

    ours_arr = np.array([ours_scores[p] for p in pairs])
    diff = float(np.abs(ours_arr - np.asarray(scores, dtype=np.float64)).max())
    corr = float(np.corrcoef(ours_arr, scores)[0, 1]) if len(pairs) > 1 else 1.0
    result = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                    "threads": torch.get_num_threads()},
        "model": "bundled all-MiniLM-L6-v2 + random 1-logit head" if args.model is None else str(args.model),
        "dataset": str(args.dataset), "pairs": len(pairs), "max_length": args.max_length, "batch_size": batch,
        "repeats": args.repeats, "timing": "best of the repeats, sides alternating",
        "rankdistill": {"seconds": round(ours_s, 3), "all_seconds": [round(t, 3) for t in ours_times],
                        "pairs_per_second": round(len(pairs) / ours_s, 1), "dtype": ours_info["dtype"],
                        "scored": report.scored},
        "sentence_transformers": {"seconds": round(peer_s, 3), "all_seconds": [round(t, 3) for t in peer_times],
                                  "pairs_per_second": round(len(pairs) / peer_s, 1),
                                  "predict_only_pairs_per_second": round(len(pairs) / predict_s, 1),
                                  "dtype": args.peer_dtype},
        "ratio": round(peer_s / ours_s, 2),
        "tokens": {"real": real, "padded_length_sorted": sorted_tokens, "padded_input_order": unsorted_tokens},
        "agreement": {"max_abs_diff": diff, "pearson": corr},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
