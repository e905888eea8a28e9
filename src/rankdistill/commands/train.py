"""``rankdistill train``: train a bi- or cross-encoder student from groups (+ teacher scores) under a budget.

The same command runs on 1 process or N (``torchrun --nproc_per_node N -m rankdistill.cli train ...``);
rerunning it after a crash resumes from the last checkpoint in ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rankdistill.commands.common import add_dataset_args, declare_outputs
from rankdistill.losses import LOSSES, MARGIN_PAIRS, RANKNET_TARGETS, RANKNET_TIES
from rankdistill.models import DEFAULT_ENCODER

logger = logging.getLogger(__name__)


def _count(text: str) -> int:
    """An integer that may be written with underscores or a k/M suffix (``12M`` = 12,000,000)."""
    t = text.strip().replace("_", "")
    scale = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(t[-1:], 1)
    try:
        return int(float(t[:-1]) * scale) if scale > 1 else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of documents like 12000000 or 12M, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("train", help="train a student (bi- or cross-encoder) under a fixed budget of documents",
                       description="Train a bi-encoder or cross-encoder from groups and teacher scores under a "
                                   "budget of documents seen (steps x batch x accumulation x processes x group "
                                   "size). Rerun the same command to resume after a crash.")
    add_dataset_args(p, split_default="train")
    p.add_argument("--groups", required=True, metavar="FILE", help="groups JSONL (from `rankdistill mine`)")
    p.add_argument("--scores", default=None, metavar="STORE",
                   help="teacher score store (needed by distillation losses)")
    p.add_argument("--teacher-id", default=None, help="teacher in the store (default: its only teacher)")
    p.add_argument("--missing-scores", choices=["error", "skip"], default="error",
                   help="pairs without a teacher score: refuse (default) or leave them out")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the model, checkpoints and training.json")
    m = p.add_argument_group("student")
    m.add_argument("--arch", choices=["bi", "cross"], default="bi", help="bi-encoder or cross-encoder (default bi)")
    m.add_argument("--model", default=DEFAULT_ENCODER, metavar="MODEL",
                   help=f"starting weights: Hugging Face folder or name (default {DEFAULT_ENCODER}, bundled)")
    m.add_argument("--layers", type=int, default=None, help="keep only the first N transformer layers")
    m.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="bi-encoder pooling (default: the model's own, else cls)")
    m.add_argument("--similarity", choices=["dot", "cosine"], default="dot", help="bi-encoder similarity (default dot)")
    m.add_argument("--max-query-length", type=int, default=32, help="query tokens (default 32)")
    m.add_argument("--max-doc-length", type=int, default=192, help="bi-encoder document tokens (default 192)")
    m.add_argument("--max-length", type=int, default=256, help="cross-encoder pair tokens (default 256)")
    lo = p.add_argument_group("loss")
    lo.add_argument("--loss", choices=sorted(LOSSES), default="kl", help="loss (default kl)")
    lo.add_argument("--group-size", type=int, default=16, help="documents per group, positive included (default 16)")
    lo.add_argument("--temperature", type=float, default=None,
                    help="temperature of kl, listnet, infonce, ranknet soft (default 1)")
    lo.add_argument("--margin-pairs", choices=MARGIN_PAIRS, default=None, help="margin_mse pairs (default pos_vs_negs)")
    lo.add_argument("--ranknet-targets", choices=RANKNET_TARGETS, default=None, help="ranknet targets (default sign)")
    lo.add_argument("--ranknet-ties", choices=RANKNET_TIES, default=None, help="ranknet teacher ties (default exclude)")
    lo.add_argument("--t2-scaling", action="store_true", default=None, help="kl: multiply by T^2")
    lo.add_argument("--in-batch-negatives", action=argparse.BooleanOptionalAction, default=None,
                    help="bi-encoder, lce/infonce: other queries' documents as negatives (default: on for infonce)")
    o = p.add_argument_group("budget and optimisation")
    o.add_argument("--budget-docs", type=_count, required=True, metavar="N",
                   help="documents to see: steps x batch x accumulation x processes x group size")
    o.add_argument("--batch-size", type=int, default=8, help="groups per device per micro-batch (default 8)")
    o.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    o.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default 2e-5)")
    o.add_argument("--head-lr", type=float, default=None,
                   help="cross-encoder: peak learning rate of the scoring head (pooler + classifier; default --lr)")
    o.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    o.add_argument("--warmup", type=float, default=0.1, help="linear warmup fraction of the steps (default 0.1)")
    o.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm, 0 = off (default 1)")
    o.add_argument("--seed", type=int, default=0, help="seed of sampling, initialisation and dropout (default 0)")
    r = p.add_argument_group("runtime")
    r.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    r.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept (default 2)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    r.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast: auto = on a GPU that supports it (default); on = on any device, a CPU too "
                   "(faster on CPUs with bf16 units, and the GPU's precision elsewhere); off")
    r.add_argument("--compile", action="store_true", help="torch.compile the student")
    r.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels, so that a GPU run repeats byte for byte (slower; training.json "
                        "lists any operation that has none)")
    r.add_argument("--workers", type=int, default=None,
                   help="data loader processes (default: 0 on CPU, up to 4 on GPU)")
    r.add_argument("--bucket-steps", type=int, default=16,
                   help="length bucketing window in steps, 1 = off (default 16)")
    r.add_argument("--overwrite", action="store_true", help="discard a finished run or checkpoints in --output")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("groups", "scores", "model"), output="dir")


def _abs(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def config_from_args(args: argparse.Namespace):
    """The :class:`~rankdistill.training.TrainConfig` of parsed ``train`` arguments."""
    from rankdistill.training import DataConfig, LossConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig

    dataset = args.dataset
    if Path(dataset).expanduser().exists():
        dataset = _abs(dataset)
    model = args.model
    if model and Path(model).expanduser().is_dir():
        model = _abs(model)
    return TrainConfig(
        data=DataConfig(dataset=dataset, groups=_abs(args.groups), split=args.split, scores=_abs(args.scores),
                        teacher_id=args.teacher_id, group_size=args.group_size, missing_scores=args.missing_scores,
                        data_dir=args.data_dir),
        model=ModelConfig(arch=args.arch, model=model, layers=args.layers, pooling=args.pooling,
                          similarity=args.similarity, max_query_length=args.max_query_length,
                          max_doc_length=args.max_doc_length, max_length=args.max_length),
        loss=LossConfig(name=args.loss, temperature=args.temperature, pairs=args.margin_pairs,
                        targets=args.ranknet_targets, ties=args.ranknet_ties, t2_scaling=args.t2_scaling,
                        in_batch_negatives=args.in_batch_negatives),
        optim=OptimConfig(budget_docs=args.budget_docs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                          lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup,
                          max_grad_norm=args.max_grad_norm, seed=args.seed),
        runtime=RuntimeConfig(output=_abs(args.output), save_every=args.save_every,
                              keep_checkpoints=args.keep_checkpoints, device=args.device, bf16=args.bf16,
                              compile=args.compile, deterministic=args.deterministic, workers=args.workers,
                              bucket_steps=args.bucket_steps, overwrite=args.overwrite),
    ).validate()


def run(args: argparse.Namespace) -> int:
    import os

    from rankdistill.training import train

    if args.groups and not Path(args.groups).is_file():
        from rankdistill.io import require_file

        require_file(args.groups, "groups file")
    config = config_from_args(args)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        s = result.summary
        print(json.dumps({"output": str(result.output), "steps": result.steps, "realised_docs": result.realised_docs,
                          "teacher_calls": result.teacher_calls, "wall_seconds": s.get("wall_seconds"),
                          "final_loss": s.get("final_loss")}))
    return 0
