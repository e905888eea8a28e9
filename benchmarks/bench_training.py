"""Training throughput (documents/s): rankdistill's engine against sentence-transformers, and the bare model.

Usage: python benchmarks/bench_training.py [--dataset DIR] [--layers N] [--group-size 16] [--batch-size 32]
                                           [--doc-length 192] [--steps 40] [--warmup-steps 10] [--compile]
                                           [--device auto] [--workers N] [--repeats 1] [--threads N]
                                           [--skip-peer] [--skip-bare] [--json OUT]

Three figures on the same start weights, data, batch, group size, document length and device, in one run:

- rankdistill: ``rankdistill.training.train`` (bi-encoder, ``--loss kl``, mean pooling + cosine as the bundled
  model has, bf16 autocast on GPU, ``--compile`` opt-in), texts tokenised once, length-bucketed dynamic padding;
- peer: ``SentenceTransformerTrainer`` + ``DistillKLDivLoss`` on (query, positive, negative_1..G-1, label)
  rows holding the same groups and teacher scores (bf16 on GPU, as many data-loader workers as ours, pinned
  memory on GPU, its defaults otherwise; never compiled);
- bare: the encoder's forward + KL loss + backward + AdamW step on fixed-shape random token ids
  (queries ``QUERY_TOKENS`` = 32 tokens, documents ``--doc-length`` tokens, no padding), the ceiling no data
  pipeline beats.

Documents/s counts documents seen (batch x group size per step) over a window of ``--steps`` optimizer
steps that starts after ``--warmup-steps`` steps of the same run (per-step callbacks of both trainers, with a
CUDA synchronisation at the window's two ends), so model loading, tokenisation, data-loader start-up and
compilation stay outside (each side's whole wall time, those included, is reported as ``wall_seconds``). The
sides alternate for ``--repeats`` rounds and the best round of each is kept, so a change in machine load does
not favour one of them. The JSON names the GPU and gives all three figures, the speed-up over the peer and the
fraction of the bare ceiling.
Groups: SciFact training queries with their judged positive and random corpus documents; teacher scores are
synthetic (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
QUERY_TOKENS = 32
"""Query token limit of both sides (special tokens included)."""

logger = logging.getLogger("bench_training")


def make_inputs(dataset_dir: Path, work: Path, group_size: int, seed: int = 0):
    """Groups (positive + a pool of random documents) for every SciFact training query, and a score store."""
    from rankdistill.data import load_dataset
    from rankdistill.data.groups import Group, write_groups
    from rankdistill.teachers import ScoreStore

    ds = load_dataset(str(dataset_dir))
    qrels = ds.qrels("train")
    ids = ds.corpus.ids()
    rng = random.Random(seed)
    groups, rows = [], []
    for qid in sorted(qrels):
        pos = sorted(qrels[qid])[:1]
        negs = [d for d in rng.sample(ids, group_size + 8) if d not in qrels[qid]][: group_size * 2 - 1]
        groups.append(Group(qid, pos, negs, "random", seed))
        rows += [(qid, pos[0], 5.0 + rng.random())] + [(qid, d, rng.gauss(0, 2)) for d in negs]
    write_groups(groups, work / "groups.jsonl")
    with ScoreStore(work / "scores.db") as store:
        store.put("synthetic", rows)
    return ds, groups, {(q, d): s for q, d, s in rows}


def start_model(work: Path, layers: int | None) -> Path:
    """The bundled all-MiniLM-L6-v2 (optionally truncated), saved once so every side loads the same weights."""
    from rankdistill.models.bi_encoder import BiEncoder

    folder = work / "start"
    BiEncoder.from_pretrained(None, layers=layers, pooling="mean", similarity="cosine").save(folder)
    return folder


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when there is one, else cpu; otherwise the named device (as the engine picks it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return dev


def default_workers(dev: torch.device) -> int:
    """The engine's default loader workers (``rankdistill.training.engine``), given to the peer as well."""
    return min(4, max(1, (os.cpu_count() or 2) // 2)) if dev.type == "cuda" else 0


def release(dev: torch.device) -> None:
    """Free what the last side left behind, so the next one starts from the same memory state."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class Window:
    """Timestamps at the end of step ``warmup`` and of step ``warmup + steps`` (1-based)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.first, self.last = warmup, warmup + steps
        self.t0 = self.t1 = None

    def __call__(self, step: int, *_: object) -> None:
        if step in (self.first, self.last):
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
            if step == self.first:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the timing window was not reached")
        return self.t1 - self.t0


def ours(args, work: Path, model: Path, tag: str) -> float:
    """Seconds of rankdistill's training loop over the timed window."""
    from rankdistill.training import DataConfig, LossConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig, train

    g, b = args.group_size, args.batch_size
    steps = args.warmup_steps + args.steps
    cfg = TrainConfig(
        data=DataConfig(str(args.dataset), str(work / "groups.jsonl"), scores=str(work / "scores.db"), group_size=g),
        model=ModelConfig(arch="bi", model=str(model), pooling="mean", similarity="cosine",
                          max_query_length=QUERY_TOKENS, max_doc_length=args.doc_length),
        loss=LossConfig("kl"),
        optim=OptimConfig(budget_docs=steps * b * g, batch_size=b, lr=2e-5),
        runtime=RuntimeConfig(str(work / f"ours-{tag}"), save_every=10**9, device=args.device,
                              compile=args.compile, workers=args.workers, progress=False, overwrite=True),
    )
    window = Window(args.warmup_steps, args.steps)
    train(cfg, on_step=window)
    return window.seconds


def peer(args, ds, groups, scores, model: Path, work: Path) -> float:
    """Seconds of ``SentenceTransformerTrainer`` with ``DistillKLDivLoss`` over the timed window."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    try:
        from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss
    except ImportError:  # sentence-transformers before the 6.x package layout
        from sentence_transformers.losses import DistillKLDivLoss
    from transformers import TrainerCallback

    g, b = args.group_size, args.batch_size
    steps = args.warmup_steps + args.steps
    st = SentenceTransformer(str(model), device=str(resolve_device(args.device)))
    # ours cuts queries at 32 tokens (special tokens included) and the peer has one limit for every column
    # (the documents'): its queries are cut the same way beforehand, so both sides encode the same tokens
    queries = {q: st.tokenizer.decode(st.tokenizer(text, add_special_tokens=False, truncation=True,
                                                   max_length=QUERY_TOKENS - 2)["input_ids"])
               for q, text in ds.queries("train").items()}
    rng = random.Random(0)
    cols: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i}": [] for i in range(1, g)}, "label": []}
    while len(cols["query"]) < steps * b:
        for grp in groups:
            docs = [grp.positive_ids[0], *rng.sample(grp.negative_ids, g - 1)]
            cols["query"].append(queries[grp.query_id])
            cols["positive"].append(ds.corpus.text(docs[0]))
            for i, d in enumerate(docs[1:], start=1):
                cols[f"negative_{i}"].append(ds.corpus.text(d))
            cols["label"].append([scores[(grp.query_id, d)] for d in docs])
    data = Dataset.from_dict({k: v[: steps * b] for k, v in cols.items()})
    dev = resolve_device(args.device)
    st.max_seq_length = args.doc_length
    targs = Args(output_dir=str(work / "st"), per_device_train_batch_size=b, max_steps=steps, learning_rate=2e-5,
                 warmup_steps=0.1, bf16=use_bf16(dev), save_strategy="no", report_to="none",
                 logging_steps=10**6, dataloader_drop_last=True, seed=0, disable_tqdm=True,
                 dataloader_num_workers=args.workers if args.workers is not None else default_workers(dev),
                 dataloader_pin_memory=dev.type == "cuda", use_cpu=dev.type == "cpu")
    window = Window(args.warmup_steps, args.steps)

    class Timer(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            window(state.global_step)

    trainer = SentenceTransformerTrainer(model=st, args=targs, train_dataset=data, loss=DistillKLDivLoss(st),
                                         callbacks=[Timer()])
    trainer.train()
    return window.seconds


def use_bf16(dev: torch.device) -> bool:
    """bf16 autocast where the engine uses it (``--bf16 auto``): a CUDA device that supports it."""
    return dev.type == "cuda" and torch.cuda.is_bf16_supported()


def bare(args, model: Path) -> float:
    """Documents/s of forward + KL + backward + AdamW on fixed shapes (no data pipeline)."""
    from rankdistill.losses import kl
    from rankdistill.models.bi_encoder import BiEncoder
    from rankdistill.models.inputs import TokenBatch

    dev = resolve_device(args.device)
    enc = BiEncoder.from_pretrained(str(model)).to(dev).train()
    g, b = args.group_size, args.batch_size
    gen = torch.Generator().manual_seed(0)
    vocab = enc.encoder.config.vocab_size

    def batch(n, length):
        ids = torch.randint(1000, vocab, (n, length), generator=gen)
        return TokenBatch(ids.to(dev), torch.ones_like(ids).to(dev))

    q, d = batch(b, QUERY_TOKENS), batch(b * g, args.doc_length)
    teacher = torch.randn(b, g, generator=gen).to(dev)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=2e-5,
                            fused=dev.type == "cuda" or None)
    runner = torch.compile(enc) if args.compile else enc
    bf16 = use_bf16(dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):  # as the engine: scores in autocast
            out = runner(q, d)
            scores = BiEncoder.group_scores(out.query_embeddings, out.doc_embeddings)
        loss = kl(scores, teacher)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup_steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * b * g / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    p.add_argument("--layers", type=int, default=None, help="truncate MiniLM-L6 to its first N layers")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--doc-length", type=int, default=192)
    p.add_argument("--steps", type=int, default=40, help="timed steps (beyond the warm-up)")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="torch.compile ours and the bare model (not the peer)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loader workers of ours and the peer (default: the engine's, 0 on CPU)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--skip-peer", action="store_true", help="leave out sentence-transformers")
    p.add_argument("--skip-bare", action="store_true", help="leave out the bare-model ceiling")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.warmup_steps < 1 or args.steps < 1:
        p.error("--warmup-steps and --steps must be at least 1 (the timing window starts after the warm-up)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    if dev.type == "cuda":
        torch.zeros(1, device=dev)  # CUDA context start-up outside every side's wall time
    extra_docs = args.steps * args.batch_size * args.group_size
    sides = ["rankdistill", *([] if args.skip_peer else ["sentence_transformers"]),
             *([] if args.skip_bare else ["bare"])]
    rates: dict[str, list[float]] = {k: [] for k in sides}
    walls: dict[str, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        ds, groups, scores = make_inputs(args.dataset, work, args.group_size)
        model = start_model(work, args.layers)
        for r in range(args.repeats):
            for side in sides:
                t0 = time.perf_counter()
                if side == "rankdistill":
                    rate = extra_docs / ours(args, work, model, str(r))
                elif side == "sentence_transformers":
                    rate = extra_docs / peer(args, ds, groups, scores, model, work)
                else:
                    rate = bare(args, model)
                walls[side].append(time.perf_counter() - t0)
                rates[side].append(rate)
                release(dev)
                logger.info("round %d %s: %.1f docs/s (%.1f s wall)", r + 1, side, rate, walls[side][-1])
    best = {k: max(v) for k, v in rates.items()}
    ours_rate, peer_rate, bare_rate = best["rankdistill"], best.get("sentence_transformers"), best.get("bare")
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_name(dev)
        device_name = gpu
    else:
        gpu = None
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import sentence_transformers
    import transformers

    report = {
        "benchmark": "training",
        "device": device_name,
        "gpu": gpu,
        "settings": {"model": "all-MiniLM-L6-v2" + (f" (first {args.layers} layers)" if args.layers else ""),
                     "group_size": args.group_size, "batch_size": args.batch_size, "doc_length": args.doc_length,
                     "query_length": QUERY_TOKENS, "timed_steps": args.steps, "warmup_steps": args.warmup_steps,
                     "compile": args.compile, "peer_compiled": False, "bf16": use_bf16(dev),
                     "workers": args.workers if args.workers is not None else default_workers(dev),
                     "repeats": args.repeats, "loss": "kl (T=1)", "timing": "best round of each side, sides "
                     "alternating; documents/s over the timed window of steps"},
        "docs_per_second": {k: round(v, 1) for k, v in best.items()},
        "all_docs_per_second": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "wall_seconds": {k: [round(x, 1) for x in v] for k, v in walls.items()},
        "wall_seconds_means": "each side's whole call: model load, tokenisation, compilation, every step",
        "speedup_vs_sentence_transformers": round(ours_rate / peer_rate, 2) if peer_rate else None,
        "fraction_of_bare": round(ours_rate / bare_rate, 3) if bare_rate else None,
        "sentence_transformers_fraction_of_bare": round(peer_rate / bare_rate, 3) if peer_rate and bare_rate else None,
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     "cuda": torch.version.cuda, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
