"""The training engine: one loop for bi- and cross-encoders, every loss, 1 or N processes.

    train(config) -> TrainResult

1. Validate the config and the budget (before any loading), check the output folder: a finished run with
   the same settings is returned as is, a checkpoint of the same settings is resumed, anything else refuses.
2. Load and validate groups and teacher scores; tokenise every query and document the run will see, once.
3. Build the plan (deterministic per step), the student, AdamW with linear warmup and decay.
4. Loop over optimizer steps: ``grad_accum`` micro-batches per device (bf16 autocast on GPU), loss over
   student scores ``[B, G]`` (or ``[B, N]`` with in-batch negatives), gradient clipping, a NaN check that
   stops with the step and its query ids, checkpoints every ``save_every`` steps.
5. Save the model (Hugging Face + sentence-transformers layout), ``training.json``, ``losses.tsv`` and the
   resolved ``train_config.json``; ``training.json`` is written last and marks the run complete.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write
from rankdistill.losses import make_loss
from rankdistill.models import model_id
from rankdistill.models.bi_encoder import BiEncoder
from rankdistill.models.cross_encoder import CrossEncoder
from rankdistill.training import checkpoint as ckpt
from rankdistill.training.budget import Budget
from rankdistill.training.config import TrainConfig
from rankdistill.training.data import (
    BatchBuilder,
    StepBatches,
    TrainBatch,
    TrainingData,
    input_digests,
    load_training_data,
)
from rankdistill.training.determinism import KernelAlerts, deterministic_kernels
from rankdistill.training.distributed import DistContext, init_distributed
from rankdistill.training.sampling import SampledGroup, TrainingPlan, hashed_seed, shard
from rankdistill.training.tokens import InputTemplate, TokenCache

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training.json"
SUMMARY_FORMAT = "rankdistill-training/1"


class TrainingDiverged(UserInputError):
    """The loss (or gradient) became NaN or infinite; training stopped before the update."""


@dataclass(frozen=True)
class TrainResult:
    """What a run produced (the same figures as ``OUTPUT/training.json``)."""

    output: Path
    steps: int
    realised_docs: int
    losses: tuple[float, ...]
    teacher_calls: int
    wall_seconds: float
    resumed_from: int | None
    summary: dict


def in_batch_scores(query_embeddings: Tensor, all_docs: Tensor, group_size: int, offset: int = 0,
                    doc_keys: Tensor | None = None, own_keys: Tensor | None = None) -> Tensor:
    """Scores ``[B, N]`` of local queries against every document of the (global) batch, each row reordered
    so that the query's own group comes first (positive at column 0), then the other documents in order.

    ``all_docs`` is ``[N, D]`` group-major; local query ``i`` owns rows ``(offset + i) * G ... + G``. With
    ``doc_keys`` ``[N]`` and ``own_keys`` ``[B, R]`` (:class:`~rankdistill.training.data.TrainBatch`), another
    group's copy of one of the query's positives or own documents scores ``-inf``: a document that is a positive
    of the query (SciFact shares 248 positives between queries) is never also one of its negatives.
    """
    b, n = query_embeddings.shape[0], all_docs.shape[0]
    full = query_embeddings @ all_docs.T
    dev = full.device
    own = ((offset + torch.arange(b, device=dev)) * group_size)[:, None] + torch.arange(group_size, device=dev)
    keep = torch.ones(b, n, dtype=torch.bool, device=dev)
    keep[torch.arange(b, device=dev)[:, None], own] = False
    if doc_keys is not None and own_keys is not None:
        clash = (doc_keys[None, :, None] == own_keys[:, None, :]).any(-1) & keep
        full = full.masked_fill(clash, float("-inf"))
    rest = torch.arange(n, device=dev).expand(b, n)[keep].view(b, n - group_size)
    return full.gather(1, torch.cat([own, rest], dim=1))


def build_student(config: TrainConfig) -> BiEncoder | CrossEncoder:
    """The student model of ``config`` (seeded, so a new classification head is the same every run)."""
    m = config.model
    torch.manual_seed(config.optim.seed)
    if m.arch == "bi":
        return BiEncoder.from_pretrained(m.model, pooling=m.pooling, similarity=m.similarity, layers=m.layers,
                                         max_query_length=m.max_query_length, max_doc_length=m.max_doc_length)
    return CrossEncoder.from_pretrained(m.model, layers=m.layers, max_length=m.max_length,
                                        max_query_length=m.max_query_length)


def is_head_parameter(name: str) -> bool:
    """Whether a parameter belongs to a sequence classifier's head (pooler or classifier), by its name."""
    parts = name.split(".")
    return "classifier" in parts or "pooler" in parts


def _optimizer(model: nn.Module, config: TrainConfig, steps: int, warmup: int, fused: bool):
    o = config.optim
    head_lr = o.head_lr if o.head_lr is not None else o.lr
    buckets: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = is_head_parameter(name)
        buckets.setdefault((head, p.ndim < 2 or name.endswith(".bias")), []).append(p)
    groups = [{"params": ps, "weight_decay": 0.0 if no_decay else o.weight_decay, "lr": head_lr if head else o.lr}
              for (head, no_decay), ps in sorted(buckets.items())]
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _changed_inputs(saved: dict | None, now: dict) -> list[str]:
    """Inputs whose contents differ from those a run recorded (none for runs from before they were recorded)."""
    return [] if saved is None else [k for k in now if saved.get(k) != now[k]]


def _check_output(config: TrainConfig, ctx: DistContext, inputs: dict) -> dict | None:
    """A finished run's summary when it can be reused; clears or refuses a folder of other settings or inputs
    (``inputs``: :func:`~rankdistill.training.data.input_digests`)."""
    out = Path(config.runtime.output)
    if out.exists() and not out.is_dir():
        raise UserInputError("the output is a file, not a folder", path=out, fix="give a new or existing folder")
    done = out / SUMMARY_FILE
    if config.runtime.overwrite:
        if ctx.is_main:
            ckpt.remove_all(out)
            with contextlib.suppress(FileNotFoundError):
                done.unlink()
        ctx.barrier()
        return None
    if done.is_file():
        try:
            summary = json.loads(done.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserInputError(f"not valid JSON ({e.msg})", path=done, fix="pass --overwrite") from None
        if summary.get("fingerprint") == config.fingerprint():
            changed = _changed_inputs(summary.get("inputs"), inputs)
            if not changed:
                return summary
            raise UserInputError(f"holds a model trained on other contents of {', '.join(changed)} (rewritten "
                                 "since)", path=out, fix="choose another --output or pass --overwrite")
        diff = config.differences(summary.get("config") or {})
        raise UserInputError(f"holds a model trained with other settings (differs in {', '.join(diff) or '?'})",
                             path=out, fix="choose another --output or pass --overwrite")
    latest = ckpt.latest_checkpoint(out)
    if latest is not None:
        state = ckpt.load_state(latest[1])
        if state.get("fingerprint") != config.fingerprint():
            diff = config.differences(json.loads(state.get("config", "{}")))
            raise UserInputError(f"holds a checkpoint of a run with other settings (differs in "
                                 f"{', '.join(diff) or '?'})", path=latest[1],
                                 fix="rerun with the same settings to resume, choose another --output, or pass "
                                     "--overwrite")
        changed = _changed_inputs(state.get("inputs"), inputs)
        if changed:
            raise UserInputError(f"holds a checkpoint of a run on other contents of {', '.join(changed)} "
                                 "(rewritten since)", path=latest[1],
                                 fix="restore those files to resume, choose another --output, or pass --overwrite")
    return None


def read_losses(model_dir: str | Path) -> list[float]:
    """The per-step training losses a finished run wrote to ``losses.tsv`` (empty when there is none)."""
    tsv = Path(model_dir) / "losses.tsv"
    if not tsv.is_file():
        return []
    return [float(line.split("\t")[1]) for line in tsv.read_text().splitlines()[1:] if line.strip()]


def _result_from_summary(out: Path, summary: dict) -> TrainResult:
    losses = read_losses(out)
    return TrainResult(out, int(summary["steps"]), int(summary["realised_docs"]), tuple(losses),
                       int(summary["teacher_calls"]), float(summary["wall_seconds"]), None, summary)


def _tokenise(data: TrainingData, config: TrainConfig, model: BiEncoder | CrossEncoder, budget: Budget,
              progress: bool, ctx: DistContext | None = None, device: torch.device | None = None
              ) -> tuple[TokenCache, TokenCache, dict[str, int] | None]:
    """Token caches of the queries and of every document the budget's steps can draw (not an epoch's worth
    when the budget is a few steps).

    With several processes (DDP) each one tokenises only its share of those documents, and the processes
    exchange the documents' lengths (what length bucketing sorts by), so every process builds the same plan:
    the third value is then those lengths, and the document cache is empty until :func:`_tokenise_own`
    fills it with this process's documents. A process then holds and tokenises about two ``world``-ths of the
    documents instead of all of them (MS MARCO's training pools: several GB per process)."""
    m = config.model
    tok = model.tokenizer
    qcache = TokenCache(tok, m.max_query_length, "queries")
    dcache = TokenCache(tok, m.max_doc_length if m.arch == "bi" else m.max_length, "documents")
    qcache.add(((q, t) for q, t in data.queries.items()), progress=progress, total=len(data.queries))
    probe = TrainingPlan(data.groups, group_size=config.data.group_size, groups_per_step=budget.groups_per_step,
                         seed=config.optim.seed, bucket_steps=config.runtime.bucket_steps)
    needed: dict[str, int] = {}
    for g in probe.groups_within(budget.steps):
        needed.update(dict.fromkeys(g.doc_ids, 0))
    corpus = data.corpus
    ddp = ctx is not None and ctx.active
    ids = list(needed)
    share = ids[ctx.rank::ctx.world_size] if ddp else ids  # type: ignore[union-attr]
    dcache.add(((d, corpus.text(d)) for d in share), progress=progress,  # type: ignore[attr-defined]
               total=len(share))
    if not ddp:
        logger.info("tokenised %d queries and %d documents once", len(qcache), len(dcache))
        return qcache, dcache, None
    parts = ctx.all_gather_ints(np.fromiter((dcache.length(d) for d in share), dtype=np.int64, count=len(share)),
                                device or torch.device("cpu"))
    for r, lengths in enumerate(parts):
        for d, n in zip(ids[r::ctx.world_size], lengths.tolist()):
            needed[d] = n
    return qcache, dcache, needed


def _longest(lengths: dict[str, int], group: SampledGroup) -> int:
    """A group's longest document in tokens, from lengths known apart from the token cache (DDP)."""
    return max(lengths[d] for d in group.doc_ids)


def _tokenise_own(plan: TrainingPlan, shared: TokenCache, dcache: TokenCache, data: TrainingData,
                  config: TrainConfig, budget: Budget, ctx: DistContext, progress: bool) -> None:
    """Fill this process's document cache under DDP with the documents of its shards of the plan's steps,
    copied from its share of the tokenising (``shared``) where there, tokenised here otherwise."""
    own: dict[str, None] = {}
    for step in range(budget.steps):
        groups = plan.step(step)
        for micro in range(config.optim.grad_accum):
            for g in shard(groups, micro=micro, rank=ctx.rank, world_size=ctx.world_size,
                           batch_size=config.optim.batch_size):
                own.update(dict.fromkeys(g.doc_ids))
    lacking = dcache.take(shared, own)
    corpus = data.corpus
    dcache.add(((d, corpus.text(d)) for d in lacking), progress=progress,  # type: ignore[attr-defined]
               total=len(lacking))
    logger.info("tokenised %d queries and, of the %d documents this process trains on, %d here",
                len(data.queries), len(dcache), len(shared) + len(lacking))


def train(config: TrainConfig, dataset=None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the student of ``config`` (see the module docstring); resumes from the latest checkpoint.

    ``dataset`` is an already loaded :class:`~rankdistill.data.Dataset` of ``config.data.dataset`` (else it is
    loaded); ``on_step(step, loss)`` is called on the main process after every optimizer step (1-based).
    """
    config.validate()
    ctx, device = init_distributed(config.runtime.device)
    if not ctx.is_main:  # one voice: the other processes report warnings and errors only
        logging.getLogger("rankdistill").setLevel(logging.WARNING)
    try:
        return _Trainer(config, ctx, device, on_step).run(dataset)
    finally:
        ctx.close()


class _Trainer:
    def __init__(self, config: TrainConfig, ctx: DistContext, device: torch.device,
                 on_step: Callable[[int, float], None] | None = None) -> None:
        self.config = config
        self.on_step = on_step
        self.ctx = ctx
        self.device = device
        self.out = Path(config.runtime.output)
        o = config.optim
        self.budget = Budget(o.budget_docs, o.batch_size, o.grad_accum, ctx.world_size, config.data.group_size)
        bf16 = config.runtime.bf16
        # auto: on a GPU that has bf16; on: on any device (a CPU too, where it runs the GPU's precision)
        self.bf16 = bf16 == "on" or (bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.progress = config.runtime.progress and ctx.is_main
        self.inputs: dict[str, str | None] = {}
        self.alerts = KernelAlerts()  # operations without a deterministic kernel (train --deterministic)

    # -- setup -----------------------------------------------------------------------------------------------
    def run(self, dataset=None) -> TrainResult:
        cfg, ctx = self.config, self.ctx
        self.inputs = input_digests(cfg)
        finished = _check_output(cfg, ctx, self.inputs)
        if finished is not None:
            logger.info("%s already holds this run (%d steps); nothing to do", self.out, finished["steps"])
            return _result_from_summary(self.out, finished)
        data = load_training_data(cfg, dataset)
        if len(data.groups) < self.budget.groups_per_step:
            raise UserInputError(f"{len(data.groups)} usable group(s) cannot fill one optimizer step of "
                                 f"{self.budget.groups_per_step} (batch x accumulation x processes)",
                                 path=cfg.data.groups, fix="lower --batch-size or --grad-accum, or mine more groups")
        model = build_student(cfg)
        qcache, shared, lengths = _tokenise(data, cfg, model, self.budget, self.progress, ctx, self.device)
        dcache = shared if lengths is None else TokenCache(shared.tokenizer, shared.max_tokens, "documents")
        m = cfg.model
        builder = BatchBuilder(arch=m.arch, template=InputTemplate.from_tokenizer(model.tokenizer),
                               query_cache=qcache, doc_cache=dcache, pad_id=int(model.tokenizer.pad_token_id or 0),
                               teacher=data.teacher, max_query_length=m.max_query_length,
                               max_doc_length=m.max_doc_length, max_length=m.max_length,
                               pad_multiple=cfg.runtime.pad_multiple, in_batch=cfg.in_batch_negatives)
        # DDP: every process's documents' lengths, each process holding its own ids (a partial, not a closure:
        # the plan travels to data-loader workers, which spawn or forkserver start by pickling it)
        length_of = builder.length if lengths is None else functools.partial(_longest, lengths)
        plan = TrainingPlan(data.groups, group_size=cfg.data.group_size, groups_per_step=self.budget.groups_per_step,
                            seed=cfg.optim.seed, bucket_steps=cfg.runtime.bucket_steps, length_of=length_of)
        if lengths is not None:
            _tokenise_own(plan, shared, dcache, data, cfg, self.budget, ctx, self.progress)
            del shared
        with deterministic_kernels(cfg.runtime.deterministic) as self.alerts:
            return self._loop(model, data, plan, builder)

    def _loop(self, model: BiEncoder | CrossEncoder, data: TrainingData, plan: TrainingPlan,
              builder: BatchBuilder) -> TrainResult:
        cfg, ctx, dev, budget = self.config, self.ctx, self.device, self.budget
        total = budget.steps
        model.to(dev)
        warmup = budget.warmup_steps(cfg.optim.warmup_ratio)
        opt, sched = _optimizer(model, cfg, total, warmup, fused=dev.type == "cuda")
        losses: list[float] = []
        lrs: list[float] = []
        start, elapsed_before, resumed_from = 0, 0.0, None
        latest = ckpt.latest_checkpoint(self.out)
        if latest is not None:
            step, folder = latest
            state = ckpt.load_state(folder)
            ckpt.load_weights(folder, model)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            losses, lrs = list(state["losses"]), list(state["lrs"])
            for name in state.get("nondeterministic_ops", ()):  # named in the sessions before this one
                self.alerts.add(name)
            start, elapsed_before, resumed_from = step, float(state["elapsed"]), step
            rng = ckpt.load_rng(folder, ctx.rank)
            if state.get("world_size") != ctx.world_size or rng is None:
                raise UserInputError(f"the checkpoint was written by {state.get('world_size')} process(es), this "
                                     f"run has {ctx.world_size}", path=folder,
                                     fix="resume with the same number of processes")
            ckpt.set_rng_state(rng)
            logger.info("resuming from step %d of %d (%s)", step, total, folder)
        else:
            torch.manual_seed(hashed_seed(cfg.optim.seed, "dropout", ctx.rank) % (2**63))
        loss_fn = make_loss(cfg.loss.name, **cfg.loss.options())
        wrapped: nn.Module = model
        if ctx.active:
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
        runner = torch.compile(wrapped) if cfg.runtime.compile else wrapped
        workers = cfg.runtime.workers
        if workers is None:
            workers = min(4, max(1, (os.cpu_count() or 2) // (2 * max(1, ctx.world_size)))) if dev.type == "cuda" else 0
        loader = torch.utils.data.DataLoader(
            StepBatches(plan, builder, start=start, stop=total, rank=ctx.rank, world_size=ctx.world_size,
                        batch_size=cfg.optim.batch_size, grad_accum=cfg.optim.grad_accum),
            batch_size=None, shuffle=False, num_workers=workers, pin_memory=dev.type == "cuda",
            prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0))
        in_batch = cfg.in_batch_negatives
        autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.bf16)
        model.train()
        bar = tqdm(total=total, initial=start, desc=f"training {cfg.model.arch}/{cfg.loss.name}", unit=" steps",
                   disable=not self.progress or None, mininterval=1.0, dynamic_ncols=True)
        t0 = time.perf_counter()
        last_ckpt = latest[1] if latest else None
        accum = cfg.optim.grad_accum
        for step, micro_batches in enumerate(loader, start=start):
            loss_sum = torch.zeros((), device=dev)
            for i, mb in enumerate(micro_batches):
                mb = mb.to(dev, non_blocking=True)
                sync = wrapped.no_sync() if ctx.active and i < accum - 1 else contextlib.nullcontext()  # type: ignore[operator]
                with sync:
                    with autocast:
                        scores = self._scores(runner, mb, in_batch)
                    loss = loss_fn(scores, mb.teacher)
                    (loss / accum).backward()
                loss_sum += loss.detach()
            mean_loss = ctx.mean(loss_sum / accum)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm
                                                       if cfg.optim.max_grad_norm > 0 else float("inf"))
            step_loss, norm = torch.stack([mean_loss.float(), grad_norm.float()]).tolist()  # one sync per step
            if not math.isfinite(step_loss) or not math.isfinite(norm):
                what = f"loss is {step_loss}" if not math.isfinite(step_loss) else f"gradient norm is {norm}"
                qids = [g.query_id for g in plan.step(step)]
                shown = ", ".join(qids[:10]) + (", ..." if len(qids) > 10 else "")
                keep = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise TrainingDiverged(f"{what} at step {step + 1} of {total} (queries {shown}); stopped before "
                                       f"the update, {keep}",
                                       fix="lower --lr, check these queries' teacher scores, or use --bf16 off")
            lrs.append(float(sched.get_last_lr()[0]))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
            bar.update(1)
            if self.progress:
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lrs[-1]:.2e}", refresh=False)
            done = step + 1
            if self.on_step is not None and ctx.is_main:
                self.on_step(done, step_loss)
            if done % cfg.runtime.save_every == 0 and done < total:
                last_ckpt = self._checkpoint(done, model, opt, sched, losses, lrs,
                                             elapsed_before + time.perf_counter() - t0)
        bar.close()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        session = time.perf_counter() - t0
        return self._finish(model, data, plan, losses, lrs, elapsed_before + session, session, start, resumed_from,
                            warmup)

    def _scores(self, runner: nn.Module, mb: TrainBatch, in_batch: bool) -> Tensor:
        """Student scores ``[B, G]`` (``[B, N]`` with in-batch negatives, own group first)."""
        b = len(mb.query_ids)
        if mb.pairs is not None:
            return runner(mb.pairs).view(b, mb.group_size)
        out = runner(mb.queries, mb.docs)
        if in_batch:
            docs = self.ctx.gather(out.doc_embeddings)
            keys = self.ctx.gather(mb.doc_keys) if mb.doc_keys is not None else None
            return in_batch_scores(out.query_embeddings, docs, mb.group_size, offset=self.ctx.rank * b,
                                   doc_keys=keys, own_keys=mb.own_keys)
        return BiEncoder.group_scores(out.query_embeddings, out.doc_embeddings)

    # -- checkpoints and outputs ----------------------------------------------------------------------------
    def _checkpoint(self, step: int, model: nn.Module, opt, sched, losses: list[float], lrs: list[float],
                    elapsed: float) -> Path:
        ctx = self.ctx
        if ctx.is_main:
            ckpt.begin(self.out, step)
        ctx.barrier()
        ckpt.write_rng(ckpt.staging_dir(self.out, step), ctx.rank)
        ctx.barrier()
        folder = ckpt.checkpoints_dir(self.out) / f"step-{step:08d}"
        if ctx.is_main:
            state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "losses": list(losses), "lrs": list(lrs), "elapsed": elapsed, "world_size": ctx.world_size,
                     "fingerprint": self.config.fingerprint(), "config": json.dumps(self.config.to_dict()),
                     "inputs": self.inputs, "nondeterministic_ops": self.alerts.names()}
            folder = ckpt.commit(self.out, step, model, state, self.config.runtime.keep_checkpoints)
        ctx.barrier()
        return folder

    def _finish(self, model: BiEncoder | CrossEncoder, data: TrainingData, plan: TrainingPlan, losses: list[float],
                lrs: list[float], wall: float, session: float, start: int, resumed_from: int | None,
                warmup: int) -> TrainResult:
        cfg, ctx, budget = self.config, self.ctx, self.budget
        # on the main process only, which writes the summary
        teacher_calls = plan.pairs_seen(budget.steps) if data.teacher is not None and ctx.is_main else 0
        session_docs = (budget.steps - start) * budget.docs_per_step
        summary = {
            "format": SUMMARY_FORMAT,
            "arch": cfg.model.arch,
            "loss": cfg.loss.name,
            "loss_options": cfg.loss.options(),
            "in_batch_negatives": cfg.in_batch_negatives,
            "base_model": model_id(cfg.model.model),
            "model_settings": asdict(model.settings),
            "score": "logit" if cfg.model.arch == "cross" else model.settings.similarity,  # type: ignore[union-attr]
            **budget.as_dict(),
            "warmup_steps": warmup,
            "wall_seconds": round(wall, 3),
            "gpu_seconds": round(wall * ctx.world_size, 3) if self.device.type == "cuda" else 0.0,
            "docs_per_second": round(session_docs / session, 2) if session > 0 and session_docs else None,
            "device": str(self.device) if self.device.type != "cuda" else torch.cuda.get_device_name(self.device),
            "bf16": self.bf16,
            "compile": cfg.runtime.compile,
            **({"deterministic": True, "nondeterministic_ops": self.alerts.names()} if cfg.runtime.deterministic
               else {}),
            "teacher_calls": teacher_calls,
            "teacher": {"store": cfg.data.scores, "teacher_id": data.teacher_id, "info": data.teacher_info}
            if data.teacher is not None else None,
            "groups": len(data.groups),
            "steps_per_epoch": plan.steps_per_epoch,
            "epochs": round(budget.steps / plan.steps_per_epoch, 4),
            "dropped": data.dropped,
            "final_loss": losses[-1] if losses else None,
            "resumed_from_step": resumed_from,
            "fingerprint": cfg.fingerprint(),
            "inputs": self.inputs,
            "config": cfg.to_dict(),
            "versions": _versions(),
        }
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            model.save(self.out, extra={"base_model": summary["base_model"], "trained_by": "rankdistill train",
                                        "loss": cfg.loss.name})
            with atomic_write(self.out / "train_config.json") as fh:
                json.dump(cfg.to_dict(), fh, indent=2, sort_keys=True)
                fh.write("\n")
            with atomic_write(self.out / "losses.tsv") as fh:
                fh.write("step\tloss\tlr\tdocs\n")
                for i, (loss, lr) in enumerate(zip(losses, lrs), start=1):
                    fh.write(f"{i}\t{loss!r}\t{lr!r}\t{i * budget.docs_per_step}\n")
            with atomic_write(self.out / SUMMARY_FILE) as fh:
                json.dump(summary, fh, indent=2, sort_keys=True)
                fh.write("\n")
            ckpt.remove_all(self.out)
            logger.info("trained %d steps (%d documents) in %.1fs, final loss %.4f -> %s", budget.steps,
                        budget.realised_docs, wall, losses[-1], self.out)
        ctx.barrier()
        return TrainResult(self.out, budget.steps, budget.realised_docs, tuple(losses), teacher_calls, wall,
                           resumed_from, summary)


def _versions() -> dict:
    import transformers

    from rankdistill import __version__

    return {"rankdistill": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
