"""``rankdistill run CONFIG.toml``: the whole study, each stage an artifact, composed from the CLI verbs.

Stages (each keyed by its settings and inputs, see :mod:`.artifacts`)::

    candidates (per test collection) ─────────────────────────────────────────────┐
    teacher-groups -> teacher (if [teacher.train])                                 │
    mine (per strategy) -> score -> diagnose -> select (per selection)             │
    train (per cell: arch x loss x strategy x group size x selection x seed) -> evaluate (per cell x test)
    compare + report (always rebuilt from the artifacts: cheap and deterministic)

The runner calls the same verbs a user calls (``rankdistill mine``, ``score``, ``train``, ``rerank``, ...), so
there is one implementation of each step. Cells (train + evaluate) go through an executor: in-process, or
Ray tasks that each ask for ``executor.gpus_per_cell`` GPUs; both write the same artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankdistill.data.dataset import dataset_fingerprint, resolve_spec
from rankdistill.errors import UserInputError
from rankdistill.experiments.artifacts import ARTIFACTS, Artifact, ArtifactStore, stable_hash
from rankdistill.experiments.config import TEACHER_LOSSES, StudyConfig, TestCollection
from rankdistill.io import atomic_write, fingerprint

logger = logging.getLogger("rankdistill.run")


class StageFailed(UserInputError):
    """A verb the runner called failed: its own one-line error, named after the verb."""


def call_verb(argv: Sequence[str]) -> None:
    """Run ``rankdistill <argv>`` in this process; raise :class:`StageFailed` on a non-zero exit.

    The verb's stdout (its human summary) is dropped and, unless the run is verbose (``-v``), its INFO logs
    too: the runner reports one line per stage event instead.
    """
    from rankdistill import cli

    argv = [str(a) for a in argv]
    logger.debug("rankdistill %s", " ".join(argv))
    root = logging.getLogger()
    saved = root.level
    if saved == logging.INFO:
        root.setLevel(logging.WARNING)
    cli._depth += 1  # composed, also in an executor's worker: the verb raises its error instead of printing it
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except StageFailed:
        raise
    except UserInputError as e:  # the verb's own error, raised through
        raise StageFailed(f"`rankdistill {argv[0]}`: {e}") from None
    finally:
        cli._depth -= 1
        root.setLevel(saved)
    if code != 0:
        raise StageFailed(f"`rankdistill {argv[0]}` failed with exit code {code}")


_TEACHER_SUMMARY = ("steps", "realised_docs", "wall_seconds", "gpu_seconds")
"""What a teacher artifact records of its training (summed over the members of a cross-fitted one)."""


def _model_identity(name: str | None) -> dict | str:
    """What a model setting means for an artifact key: the fingerprint of the files it resolves to (``None``
    and the default encoder's names resolve to the bundled checkpoint), or the hub id when it is not local.
    Keys then change when the weights behind a name change, and not when the same weights move."""
    from rankdistill.models import resolve_model

    resolved = resolve_model(name)
    return fingerprint(Path(resolved)) if Path(resolved).exists() else resolved


def _rows(db: Path) -> int:
    """Scores held by a store file (0 when there is none)."""
    from rankdistill.teachers.store import ScoreStore

    if not db.exists():
        return 0
    with ScoreStore(db, readonly=True) as store:
        return store.count()


def _rows_at_start(work: Path, db: Path) -> int:
    """:func:`_rows` of ``db`` when the stage working in ``work`` first started: a resumed stage (killed
    mid-way) counts the scores its earlier attempts added too, not only the last attempt's."""
    noted = work / f".rows-at-start-{db.name}.json"
    if noted.is_file():
        return int(json.loads(noted.read_text())["rows"])
    rows = _rows(db)
    with atomic_write(noted) as fh:
        json.dump({"rows": rows}, fh)
    return rows


def _forget_rows_at_start(work: Path) -> None:
    """Remove the counts :func:`_rows_at_start` noted, once the stage has used them (not artifact files)."""
    for f in work.glob(".rows-at-start-*.json"):
        f.unlink()


@dataclass(frozen=True)
class Resolved:
    """Dataset specifiers turned into paths (or ``irds:`` ids), and their fingerprints for hashing."""

    train: str
    tests: dict[str, str]
    fingerprints: dict[str, Any]


def resolve_datasets(cfg: StudyConfig, data_dir: str | None) -> Resolved:
    base = Path(cfg.source).parent if cfg.source else Path.cwd()
    root = data_dir or (str((base / cfg.data_dir).resolve()) if cfg.data_dir else None) \
        or os.environ.get("RANKDISTILL_DATA")

    def one(spec: str) -> str:
        if spec.startswith("irds:"):
            return spec
        local = base / spec
        return str(local.resolve()) if local.exists() else str(Path(resolve_spec(spec, root)).resolve())

    train = one(cfg.train.dataset)
    tests = {t.name: one(t.dataset) for t in cfg.tests}
    fps = {s: dataset_fingerprint(s) for s in {train, *tests.values()}}
    return Resolved(train, tests, fps)


def _keep_judged(run_file: Path, qrels, tag: str, test: str, source: str) -> dict:
    """Drop the candidate queries without judgements (e.g. the 146 unjudged DL 2020 topics): they cannot be
    scored, and re-ranking them would only cost time. Returns the counts kept and dropped; none kept is bad
    input (the config check says the same before any stage)."""
    from rankdistill.data.runs import judged_part, read_run, write_run

    run = read_run(run_file)
    kept = judged_part(run, qrels)
    if not kept:
        raise UserInputError(f"test {test!r}: the candidates ({source}) hold no judged query of the split",
                             fix="give candidates made for the test's dataset and split")
    if len(kept) < len(run):
        write_run(kept, run_file, tag=tag)
    return {"queries": len(kept), "unjudged_dropped": len(run) - len(kept)}


# ---------------------------------------------------------------------------------------------------------
# cells: the unit an executor runs (top-level functions with picklable arguments, for Ray)

@dataclass(frozen=True)
class Cell:
    arch: str
    loss: str
    strategy: str
    group_size: int
    selection: str
    seed: int
    budget: int = 0
    """Documents to train on; 0 is the study's budget (``student.budget_docs``). Only budget-study cells set it."""

    @property
    def label(self) -> str:
        sel = "" if self.selection == "all" else f" {self.selection}"
        docs = f" {self.budget}docs" if self.budget else ""
        return f"{self.arch}/{self.loss}/{self.strategy}/g{self.group_size}{sel}{docs}/s{self.seed}"

    def settings(self) -> dict:
        """The cell's part of its training artifact's key. ``budget`` appears only where it is set, so the
        keys of the cells at the study's budget are what they were before budget studies existed."""
        out = dataclasses.asdict(self)
        if not self.budget:
            del out["budget"]
        return out


def grid_cells(cfg: StudyConfig) -> list[Cell]:
    """The main grid: arch x loss x strategy x group size x selection x seed, at the study's budget."""
    g = cfg.grid
    return [Cell(a, lo, s, gs, sel, seed) for a in g.archs for lo in g.losses for s in g.strategies
            for gs in g.group_sizes for sel in g.selections for seed in g.seeds]


def entropy_cells(cfg: StudyConfig) -> list[Cell]:
    """The entropy study's cells: its bands and its all-queries references (none without the study)."""
    e, g = cfg.entropy_study, cfg.grid
    if e is None:
        return []
    gs = e.group_size or max(g.group_sizes)
    return [Cell(a, lo, e.strategy, gs, sel, seed) for a in e.archs for lo in e.losses for sel in ("all", *e.bands)
            for seed in e.seeds or g.seeds]


def budget_cells(cfg: StudyConfig) -> list[Cell]:
    """The budget study's cells: each of its budgets and the references at the study's budget (``budget`` 0)."""
    b = cfg.budget_study
    if b is None:
        return []
    archs, losses, strategies, seeds, gs = b.axes(cfg.grid)
    return [Cell(a, lo, s, gs, "all", seed, budget) for a in archs for lo in losses for s in strategies
            for budget in (0, *b.budgets) for seed in seeds]


def study_cells(cfg: StudyConfig) -> list[Cell]:
    """The grid's cells, then the entropy study's (its bands, and its all-queries references when the grid
    lacks them), then the budget study's (its budgets, and its references at the study's budget when the
    grid lacks them), each once."""
    return list(dict.fromkeys([*grid_cells(cfg), *entropy_cells(cfg), *budget_cells(cfg)]))


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to train one cell and evaluate it on every test collection."""

    cell: Cell
    artifacts_root: str
    train_settings: dict
    train_inputs: dict[str, tuple[str, str]]
    train_argv: tuple[str, ...]
    evals: tuple[dict, ...]
    """One per test: ``settings``, ``inputs`` (stage, hash) and the argv pieces for rerank/retrieve."""


def _load_inputs(store: ArtifactStore, inputs: dict[str, tuple[str, str]]) -> dict[str, Artifact]:
    out = {}
    for name, (stage, key) in inputs.items():
        art = store.get(stage, key)
        if art is None:
            raise RuntimeError(f"input artifact {stage}/{key} is missing")
        out[name] = art
    return out


def run_cell(job: CellJob) -> dict:
    """Train one cell (or reuse it) and evaluate it on every test; returns hashes and reuse flags."""
    store = ArtifactStore(job.artifacts_root)
    inputs = _load_inputs(store, job.train_inputs)
    gpu = _has_gpu()

    def train(work: Path) -> dict:
        call_verb([*job.train_argv, "--output", work / "model", "--save-every", "500"])
        summary = json.loads((work / "model" / "training.json").read_text())
        for ckpt in (work / "model").glob("checkpoints"):
            shutil.rmtree(ckpt, ignore_errors=True)
        return {k: summary.get(k) for k in ("steps", "realised_docs", "teacher_calls", "wall_seconds",
                                             "gpu_seconds", "final_loss") if k in summary}

    trained, reused = store.run("train", job.train_settings, inputs, train, seed=job.cell.seed, gpu=gpu)
    ev_inputs_of = [_load_inputs(store, ev["inputs"]) for ev in job.evals]
    if trained.lacks("model"):
        done = [store.get("evaluate", store.key("evaluate", ev["settings"], {**ins, "model": trained}))
                for ev, ins in zip(job.evals, ev_inputs_of)]
        if any(d is None for d in done):
            # a results bundle left this cell's model behind before all its evaluations ran: train the cell
            # again and evaluate the new model on every test, so one cell's results come from one model
            logger.info("cell %s: its model was not carried and an evaluation is missing; training it again",
                        job.cell.label)
            for d in (*done, trained):
                if d is not None:
                    store.discard(d)
            trained, reused = store.run("train", job.train_settings, inputs, train, seed=job.cell.seed, gpu=gpu)
    out = {"train": trained.hash, "train_reused": reused, "evals": {}}
    for ev, ins in zip(job.evals, ev_inputs_of):
        ev_inputs = {**ins, "model": trained}

        def evaluate(work: Path, ev: dict = ev) -> dict:
            run = work / "run.trec"
            call_verb([*ev["rank_argv"], "--model", trained.file("model"), "--output", run])
            call_verb(["evaluate", *ev["eval_argv"], "--run", run, "--per-query", work / "per_query.tsv"])
            return {}

        art, _r = store.run("evaluate", ev["settings"], ev_inputs, evaluate, seed=job.cell.seed, gpu=gpu)
        out["evals"][ev["test"]] = art.hash
    return out


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


# ---------------------------------------------------------------------------------------------------------

class Progress:
    """One log line per stage event with counts and an ETA from the mean time per finished item."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done, self.reused = stage, total, 0, 0
        self.start = time.perf_counter()
        logger.info("[%s] %d to do", stage, total)

    def step(self, label: str, reused: bool) -> None:
        self.done += 1
        self.reused += int(reused)
        elapsed = time.perf_counter() - self.start
        worked = self.done - self.reused
        eta = elapsed / worked * (self.total - self.done) if worked else 0.0
        logger.info("[%s] %d/%d %s%s  elapsed %s  ETA %s", self.stage, self.done, self.total, label,
                    " (reused)" if reused else "", _dur(elapsed), _dur(eta))


def _dur(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Study:
    """One execution of a study config into ``output``."""

    def __init__(self, cfg: StudyConfig, output: str | os.PathLike, data_dir: str | None = None) -> None:
        self.cfg = cfg
        if logging.getLogger().level <= logging.INFO:
            logger.setLevel(logging.INFO)
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.store = ArtifactStore(self.output / ARTIFACTS)
        self.data = resolve_datasets(cfg, data_dir)
        self.teacher_given: str | None = None
        self.teacher_art: Artifact | None = None
        self.used: list[Artifact] = []

    # -- helpers ------------------------------------------------------------------------------------------
    def _run(self, stage: str, settings: dict, inputs: dict[str, Artifact], fn, progress: Progress, label: str,
             seed: int | None = None) -> Artifact:
        art, reused = self.store.run(stage, settings, inputs, fn, seed=seed, gpu=_has_gpu())
        progress.step(label, reused)
        self.used.append(art)
        return art

    @property
    def teacher_model(self) -> str:
        """The teacher's path (a given model, or the trained one's folder); read only by stages that run."""
        if self.teacher_given is not None:
            return self.teacher_given
        assert self.teacher_art is not None
        return str(self.teacher_art.file("model"))

    @property
    def teacher_folder(self) -> str | None:
        """The teacher's folder for reading what describes it (a cross-fitted teacher's plan), also when a results
        bundle left its weights behind (:attr:`teacher_model` refuses that); None without a teacher."""
        if self.teacher_given is not None:
            return self.teacher_given
        return str(self.teacher_art.path / "model") if self.teacher_art is not None else None

    @property
    def has_teacher(self) -> bool:
        t = self.cfg.teacher
        return t is not None and (t.model is not None or t.train is not None)

    def _train_dataset(self) -> dict:
        return {"dataset": self.data.fingerprints[self.data.train], "split": self.cfg.train.split,
                "max_queries": self.cfg.train.max_queries}

    # -- stages -------------------------------------------------------------------------------------------
    def candidates(self) -> dict[str, Artifact]:
        p = Progress("candidates", len(self.cfg.tests))
        out = {}
        for t in self.cfg.tests:
            spec = self.data.tests[t.name]
            settings = {"dataset": self.data.fingerprints[spec], "split": t.split, "source": t.candidates,
                        "depth": t.depth, "k1": self.cfg.first_stage.k1, "b": self.cfg.first_stage.b,
                        "judged_only": True}
            if t.candidates not in ("bm25", "dataset"):
                settings["file"] = fingerprint(Path(self.cfg.source).parent / t.candidates)
            out[t.name] = self._run("candidates", settings, {}, lambda w, t=t, spec=spec: self._make_candidates(
                w, t, spec), p, t.name)
        return out

    def _make_candidates(self, work: Path, t: TestCollection, spec: str) -> dict:
        from rankdistill.data import load_dataset
        from rankdistill.data.runs import read_run, run_tag, write_run

        run = work / "run.trec"
        tag = run_tag(t.candidates)  # "bm25", "dataset", or a run file's path
        ds = load_dataset(spec)
        if t.candidates == "bm25":
            call_verb(["retrieve", "--dataset", spec, "--split", t.split, "--retriever", "bm25", "--k", t.depth,
                       "--k1", self.cfg.first_stage.k1, "--b", self.cfg.first_stage.b, "--tag", t.candidates,
                       "--output", run])
        else:
            source = ds.candidates(t.split) if t.candidates == "dataset" else \
                read_run(Path(self.cfg.source).parent / t.candidates)
            if source is None:
                raise UserInputError(f"test {t.name!r}: the dataset has no candidates for split {t.split!r}",
                                     fix="use candidates = \"bm25\" or give a run file")
            write_run(source, run, tag=tag, k=t.depth)
        return _keep_judged(run, ds.qrels(t.split), tag=tag, test=t.name, source=t.candidates)


    def teacher(self) -> None:
        t = self.cfg.teacher
        if t is None or (t.model is None and t.train is None):
            return
        if t.model is not None:
            from rankdistill.models import resolve_model

            resolved = resolve_model(t.model)
            self.teacher_given = resolved
            p = Progress("teacher", 1)
            self.teacher_art = self._run("teacher", {"model": _model_identity(t.model)}, {},
                                         lambda w: {"model": resolved}, p, "given")
            return
        r = t.train
        assert r is not None
        p = Progress("teacher", 2)
        gsettings = {**self._train_dataset(), "max_queries": r.max_queries, "strategy": r.strategy,
                     "group_size": r.group_size, "depth": self.cfg.mining.depth, "seed": r.seed}
        groups = self._run("mine", gsettings, {},
                           lambda w: self._mine(w, r.strategy, r.group_size, False, r.seed, 2 * r.group_size,
                                                r.max_queries),
                           p, f"teacher groups ({r.strategy})")
        recipe = dataclasses.asdict(r)
        if r.folds == 1:  # the key of a teacher trained before cross-fitting existed
            del recipe["folds"]
        settings = {"recipe": recipe, "train": self._train_dataset(), "model": _model_identity(r.model)}
        model = r.model

        def train(group_file: Path, out: Path, budget: int) -> dict:
            argv = ["train", "--dataset", self.data.train, "--split", self.cfg.train.split,
                    "--groups", group_file, "--arch", r.arch, "--loss", r.loss,
                    "--group-size", r.group_size, "--budget-docs", budget,
                    "--batch-size", r.batch_size, "--lr", r.lr, "--seed", r.seed, "--output", out,
                    "--save-every", 200]
            if r.arch == "cross":
                argv += ["--max-length", r.max_length]
                if r.head_lr:
                    argv += ["--head-lr", r.head_lr]
            else:
                argv += ["--max-doc-length", r.max_length, "--max-query-length", r.query_max_length]
            if model:
                argv += ["--model", model]
            if r.layers:
                argv += ["--layers", r.layers]
            call_verb(argv)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            summary = json.loads((out / "training.json").read_text())
            return {k: summary.get(k) for k in _TEACHER_SUMMARY}

        def fn(work: Path) -> dict:
            if r.folds < 2:
                return train(groups.file("groups.jsonl"), work / "model", r.budget_docs)
            return self._train_crossfit(work, groups.file("groups.jsonl"), train)

        label = f"trained ({r.arch}, {r.loss}{f', {r.folds} cross-fitted members' if r.folds > 1 else ''})"
        differ = self.store.nearest_differences("teacher", settings, {"groups": groups})
        if differ:  # the costliest stage before the cells, once per study: say why it is not reused
            logger.warning("[teacher] the teacher in %s was made with other settings (%s), so a new one is "
                           "trained (a study resumed elsewhere needs the model and data it was started with)",
                           self.store.root / "teacher", ", ".join(differ))
        self.teacher_art = self._run("teacher", settings, {"groups": groups}, fn, p, label)

    def _train_crossfit(self, work: Path, group_file: Path, train: Callable[[Path, Path, int], dict]) -> dict:
        """Train ``folds`` members, member m on every teacher query outside fold m with (k - 1)/k of the
        budget, and write the cross-fitted teacher's folder (:mod:`rankdistill.teachers.crossfit`)."""
        from rankdistill.data.groups import read_groups, write_groups
        from rankdistill.teachers.crossfit import assign_folds, write_crossfit

        r = self.cfg.teacher.train
        assert r is not None
        groups = read_groups(group_file)
        folds = assign_folds((g.query_id for g in groups), r.folds, r.seed)
        budget = round(r.budget_docs * (r.folds - 1) / r.folds)
        members, summaries = [], []
        for m, fold in enumerate(folds):
            held = set(fold)
            own = [g for g in groups if g.query_id not in held]
            write_groups(own, work / f"groups-{m}.jsonl")
            summaries.append(train(work / f"groups-{m}.jsonl", work / "model" / f"member-{m}", budget))
            members.append((f"member-{m}", [g.query_id for g in own]))
        write_crossfit(work / "model", members, folds=r.folds, seed=r.seed, budget_docs_per_member=budget)
        total = {k: sum(s.get(k) or 0 for s in summaries) for k in _TEACHER_SUMMARY}
        return {**total, "members": summaries}

    def _mine(self, work: Path, strategy: str, group_size: int, teacher: bool, seed: int, pool: int,
              max_queries: int | None = None) -> dict:
        m = self.cfg.mining
        argv = ["mine", "--dataset", self.data.train, "--split", self.cfg.train.split, "--strategy", strategy,
                "--group-size", group_size, "--pool", pool, "--depth", m.depth, "--seed", seed,
                "--output", work / "groups.jsonl"]
        max_queries = self.cfg.train.max_queries if max_queries is None else max_queries
        if max_queries:
            argv += ["--max-queries", max_queries]
        if strategy == "teacher":
            argv += ["--max-rank", min(m.teacher_top, m.depth)]
        if strategy in ("dense", "ensemble"):
            if m.dense_model:
                argv += ["--encoder", m.dense_model]
            if m.dense_max_length:
                argv += ["--encoder-max-length", m.dense_max_length]
            argv += ["--embedding-cache", self.output / "cache" / "embeddings"]
        if strategy == "ensemble":
            named = [s for s in m.ensemble_systems if s in ("bm25", "dense")]
            files = [str(Path(self.cfg.source).parent / s) for s in m.ensemble_systems if s not in ("bm25", "dense")]
            if named:
                argv += ["--retrievers", ",".join(named)]
            if files:
                argv += ["--systems", ",".join(files)]
            argv += ["--ensemble-n", m.ensemble_per_system, "--ensemble-margin", m.ensemble_margin]
        cache = self._teacher_cache() if teacher else None
        if cache:
            tc = self.cfg.teacher
            argv += ["--teacher", self.teacher_model, "--scores", work / "mining-scores.db", "--cache", cache,
                     "--max-length", tc.max_length if tc else 256, "--batch-size", tc.batch_size if tc else 64]
            if m.false_negative_margin is not None:
                argv += ["--fn-margin", m.false_negative_margin]
        # a first stage without a model (random, bm25) needs no GPU for its shards
        from rankdistill.mining.base import MODEL_STRATEGIES

        argv += self._scoring_executor(None if teacher or strategy in MODEL_STRATEGIES else 0.0)
        cache_start = _rows_at_start(work, cache) if cache else 0
        call_verb(argv)
        meta = json.loads((work / "groups.jsonl.meta.json").read_text())
        # the pairs the teacher computed, as the shared store grew: a killed stage's first attempt included
        # (the command's own count, in the meta file, is its last attempt's)
        computed = _rows(cache) - cache_start if cache else 0
        _forget_rows_at_start(work)
        return {"counts": meta.get("counts", {}), "teacher_calls": _rows(work / "mining-scores.db"),
                "teacher_calls_computed": computed}

    def _scoring_executor(self, gpus: float | None = None) -> list:
        """With ``executor.kind = "ray"`` mining and the teacher's scoring fan out over Ray too (shards of
        queries, or chunks of pairs, as tasks, each asking for ``executor.gpus_per_cell`` GPUs), as the cells
        do; the other executors mine and score in this process (a process pool would only share the one GPU)."""
        ex = self.cfg.executor
        if ex.kind != "ray":
            return []
        return ["--executor", "ray", "--gpus-per-task", ex.gpus_per_cell if gpus is None else gpus,
                *(["--ray-address", ex.address] if ex.address else [])]

    def _teacher_cache(self) -> Path:
        """One score store per teacher shared by every mining and labelling stage of the study: a pair that
        one strategy had scored is copied, not scored again. Each stage's own store (and its count of teacher
        calls, the strategy's cost on its own) is the same as without it."""
        assert self.teacher_art is not None
        tc = self.cfg.teacher
        folder = self.output / "cache" / "teacher-scores"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.teacher_art.hash}-{tc.max_length if tc else 256}.db"

    def mine(self) -> dict[str, Artifact]:
        g, m = self.cfg.grid, self.cfg.mining
        pool = m.pool or 2 * max(g.group_sizes)
        pool = max(pool, max(g.group_sizes) - 1)
        p = Progress("mine", len(g.strategies))
        out = {}
        for s in g.strategies:
            uses_teacher = s in ("teacher", "ensemble") or (m.false_negative_margin is not None and self.has_teacher)
            settings = {**self._train_dataset(), "strategy": s, "group_size": max(g.group_sizes), "pool": pool,
                        "mining": dataclasses.asdict(m)}
            if s in ("dense", "ensemble"):
                settings["encoder"] = _model_identity(m.dense_model)
            if s == "ensemble":
                # random documents pad the union only to the group's need (before: to the pool; keys changed)
                settings["ensemble_fill"] = "group"
                files = [n for n in m.ensemble_systems if n not in ("bm25", "dense")]
                if files:  # run files as systems: their content, not only their names
                    settings["system_files"] = [fingerprint(Path(self.cfg.source).parent / n) for n in files]
            inputs = {"teacher": self.teacher_art} if uses_teacher and self.teacher_art else {}
            tc = self.cfg.teacher
            if inputs and tc is not None and (tc.train is None or tc.max_length != tc.train.max_length):
                # the teacher scores at [teacher] max_length; a trained teacher's key holds its own length,
                # which is the scoring length in every study keyed before this setting was (keys unchanged)
                settings["teacher_max_length"] = tc.max_length
            teacher = "teacher" in inputs
            out[s] = self._run("mine", settings, inputs,
                               lambda w, s=s, teacher=teacher: self._mine(w, s, max(g.group_sizes), teacher, m.seed,
                                                                           pool), p, s, seed=m.seed)
        return out

    def score(self, mined: dict[str, Artifact]) -> dict[str, Artifact]:
        if not self.has_teacher:
            return {}
        p = Progress("score", len(mined))
        out = {}
        for s, groups in mined.items():
            def fn(work: Path, groups: Artifact = groups) -> dict:
                from rankdistill.data.groups import iter_groups
                from rankdistill.teachers.store import ScoreStore, copy_store

                db = work / "scores.db"
                prior = groups.file("mining-scores.db")
                if prior.exists():  # a resumed stage's store is replaced (with a killed run's log, see copy_store)
                    copy_store(prior, db)
                cache = self._teacher_cache()
                # counted from the mining's store, not from what a killed attempt of this stage left in db
                before, cache_before = _rows(prior), _rows_at_start(work, cache)
                call_verb(["score", "--dataset", self.data.train, "--split", self.cfg.train.split,
                           "--groups", groups.file("groups.jsonl"), "--teacher", self.teacher_model,
                           "--cache", cache,
                           "--max-length", self.cfg.teacher.max_length if self.cfg.teacher else 256,
                           "--batch-size", self.cfg.teacher.batch_size if self.cfg.teacher else 64, "--output", db,
                           *self._scoring_executor()])
                after = _rows(db)
                # the store keeps the pairs the groups train on: the mining scores copied in above served to
                # count the labelling calls, and the teacher strategy's 200 per query would only weigh it down
                with ScoreStore(db) as store:
                    removed = store.keep_only((g.query_id, d) for _n, g in iter_groups(groups.file("groups.jsonl"))
                                              for d in (*g.positive_ids, *g.negative_ids))
                for extra in ("scores.db-wal", "scores.db-shm"):
                    (work / extra).unlink(missing_ok=True)
                computed = _rows(cache) - cache_before
                _forget_rows_at_start(work)
                return {"pairs": after - removed, "teacher_calls": after - before,
                        "teacher_calls_computed": computed}

            out[s] = self._run("score", {"teacher_max_length": self.cfg.teacher.max_length},
                               {"groups": groups, "teacher": self.teacher_art}, fn, p, s)
        return out

    def diagnose(self, mined: dict[str, Artifact], scores: dict[str, Artifact]) -> dict[str, Artifact]:
        if not scores:
            return {}
        d = self.cfg.diagnostics
        p = Progress("diagnose", len(scores))
        out = {}
        for s in scores:
            def fn(work: Path, s: str = s) -> dict:
                argv = ["diagnose", "--dataset", self.data.train, "--split", self.cfg.train.split,
                        "--groups", mined[s].file("groups.jsonl"), "--scores", scores[s].file("scores.db"),
                        "--temperature", d.temperature, "--alpha", d.alpha, "--metric", d.metric,
                        "--group-size", max(self.cfg.grid.group_sizes),
                        "--cache-dir", self.output / "cache" / "embeddings", "--output", work / "stats.parquet"]
                if d.encoder:
                    argv += ["--encoder", d.encoder]
                if d.max_length:
                    argv += ["--max-length", d.max_length]
                call_verb(argv)
                return {}

            out[s] = self._run("diagnose", {"diagnostics": dataclasses.asdict(d), "encoder": _model_identity(d.encoder),
                                            "group_size": max(self.cfg.grid.group_sizes)},
                               {"groups": mined[s], "scores": scores[s]}, fn, p, s)
        return out

    def _selections(self) -> list[tuple[str, str]]:
        """(strategy, selection) pairs to compute: the grid's selections for every strategy, and the entropy
        study's bands for its strategy."""
        sels = [x for x in self.cfg.grid.selections if x != "all"]
        todo = [(s, sel) for s in self.cfg.grid.strategies for sel in sels]
        e = self.cfg.entropy_study
        if e is not None:
            todo += [(e.strategy, band) for band in e.bands if (e.strategy, band) not in todo]
        return todo

    def select(self, mined: dict[str, Artifact], diags: dict[str, Artifact]) -> dict[tuple[str, str], Artifact]:
        out: dict[tuple[str, str], Artifact] = {}
        for s in mined:
            out[(s, "all")] = mined[s]
        todo = self._selections()
        if not todo:
            return out
        p = Progress("select", len(todo))
        for s, sel in todo:
            def fn(work: Path, s: str = s, sel: str = sel) -> dict:
                argv = ["select", "--groups", mined[s].file("groups.jsonl"),
                        "--stats", diags[s].file("stats.parquet"), "--output", work / "groups.jsonl"]
                if sel.startswith("keep_quantile_band"):
                    _, lo, hi = sel.split(":")
                    argv += ["--rule", "keep_quantile_band", "--lo", lo, "--hi", hi]
                else:
                    argv += ["--rule", sel]
                call_verb(argv)
                return {}

            out[(s, sel)] = self._run("select", {"selection": sel}, {"groups": mined[s], "stats": diags[s]},
                                      fn, p, f"{s} {sel}")
        return out

    def cells(self) -> list[Cell]:
        return study_cells(self.cfg)

    def cell_job(self, cell: Cell, groups: dict[tuple[str, str], Artifact], scores: dict[str, Artifact],
                 candidates: dict[str, Artifact]) -> CellJob:
        st = self.cfg.student
        model = (st.cross_model or st.model) if cell.arch == "cross" else st.model
        distil = cell.loss in TEACHER_LOSSES
        budget = cell.budget or st.budget_docs
        student = dataclasses.asdict(st) | {"budget_docs": budget}
        if not st.deterministic:  # added later: the cells of studies run before keep their keys
            del student["deterministic"]
        train_settings = {"cell": cell.settings(), "student": student,
                          "train": self._train_dataset(), "model": _model_identity(model)}
        inputs = {"groups": groups[(cell.strategy, cell.selection)]}
        argv = ["train", "--dataset", self.data.train, "--split", self.cfg.train.split,
                "--groups", inputs["groups"].file("groups.jsonl"), "--arch", cell.arch, "--loss", cell.loss,
                "--group-size", cell.group_size, "--budget-docs", budget, "--batch-size", st.batch_size,
                "--grad-accum", st.grad_accum, "--lr", (st.cross_lr or st.lr) if cell.arch == "cross" else st.lr,
                "--warmup", st.warmup, "--seed", cell.seed,
                "--max-query-length", st.query_max_length, "--max-doc-length", st.max_length,
                "--max-length", st.max_length + st.query_max_length, "--bf16", "auto" if st.bf16 else "off"]
        if st.deterministic:
            argv += ["--deterministic"]
        if cell.arch == "bi":
            argv += ["--pooling", st.pooling, "--similarity", st.similarity]
        elif st.cross_head_lr:
            argv += ["--head-lr", st.cross_head_lr]
        if model:
            argv += ["--model", model]
        if st.layers:
            argv += ["--layers", st.layers]
        if distil:
            inputs["scores"] = scores[cell.strategy]
            argv += ["--scores", inputs["scores"].file("scores.db")]
            if cell.loss == "kl" and st.temperature != 1.0:
                argv += ["--temperature", st.temperature]
        evals = []
        for t in self.cfg.tests:
            spec = self.data.tests[t.name]
            mode = t.mode
            if mode == "retrieve" and cell.arch != "bi":
                continue  # full-corpus retrieval is for bi-encoders; cross-encoders are read on re-ranking tests
            if mode == "retrieve":
                rank_argv = ["retrieve", "--dataset", spec, "--split", t.split, "--retriever", "dense",
                             "--k", t.depth]
            else:
                rank_argv = ["rerank", "--dataset", spec, "--split", t.split,
                             "--candidates", candidates[t.name].file("run.trec")]
            eval_argv = ["--dataset", spec, "--split", t.split]
            if t.metrics:
                eval_argv += ["--metrics", *t.metrics]
            evals.append({"test": t.name, "settings": {"test": dataclasses.asdict(t), "mode": mode},
                          "inputs": {"candidates": ("candidates", candidates[t.name].hash)},
                          "rank_argv": tuple(str(a) for a in rank_argv),
                          "eval_argv": tuple(str(a) for a in eval_argv)})
        return CellJob(cell, str(self.store.root), train_settings,
                       {k: (v.stage, v.hash) for k, v in inputs.items()}, tuple(str(a) for a in argv), tuple(evals))

    def reference_runs(self, candidates: dict[str, Artifact]) -> dict[str, dict[str, Artifact]]:
        """BM25 (the candidates themselves) and the teacher re-ranking them: the rows every student is read
        against."""
        out: dict[str, dict[str, Artifact]] = {"first stage": {}, "teacher": {}, "untrained bi-encoder": {}}
        base = self._base_encoder()
        todo = len(self.cfg.tests) * (1 + (base is not None)) + sum(
            t.mode == "rerank" for t in self.cfg.tests) * (self.teacher_art is not None)
        p = Progress("reference", todo)
        for t in self.cfg.tests:
            spec = self.data.tests[t.name]
            eval_argv = ["--dataset", spec, "--split", t.split] + (["--metrics", *t.metrics] if t.metrics else [])

            def first(work: Path, t: TestCollection = t, eval_argv: list = eval_argv) -> dict:
                call_verb(["evaluate", *eval_argv, "--run", candidates[t.name].file("run.trec"),
                           "--per-query", work / "per_query.tsv"])
                return {}

            out["first stage"][t.name] = self._run("evaluate", {"reference": "first stage", "test": t.name,
                                                                "metrics": list(t.metrics)},
                                                   {"candidates": candidates[t.name]}, first, p,
                                                   f"{t.name} first stage")
            if base is not None:
                def untrained(work: Path, t: TestCollection = t, spec: str = spec, eval_argv: list = eval_argv
                              ) -> dict:
                    if t.mode == "retrieve":
                        call_verb(["retrieve", "--dataset", spec, "--split", t.split, "--retriever", "dense",
                                   "--model", base.file("model"), "--k", t.depth, "--output", work / "run.trec"])
                    else:
                        call_verb(["rerank", "--dataset", spec, "--split", t.split, "--model", base.file("model"),
                                   "--arch", "bi", "--candidates", candidates[t.name].file("run.trec"),
                                   "--output", work / "run.trec"])
                    call_verb(["evaluate", *eval_argv, "--run", work / "run.trec",
                               "--per-query", work / "per_query.tsv"])
                    return {}

                out["untrained bi-encoder"][t.name] = self._run(
                    "evaluate", {"reference": "untrained bi-encoder", "test": t.name,
                                 "mode": t.mode, "depth": t.depth, "metrics": list(t.metrics)},
                    {"candidates": candidates[t.name], "model": base}, untrained, p, f"{t.name} untrained bi-encoder")
            if self.teacher_art is not None and t.mode == "rerank":
                def teach(work: Path, t: TestCollection = t, spec: str = spec, eval_argv: list = eval_argv) -> dict:
                    call_verb(["rerank", "--dataset", spec, "--split", t.split, "--model", self.teacher_model,
                               "--candidates", candidates[t.name].file("run.trec"), "--output", work / "run.trec"])
                    call_verb(["evaluate", *eval_argv, "--run", work / "run.trec",
                               "--per-query", work / "per_query.tsv"])
                    return {}

                out["teacher"][t.name] = self._run("evaluate", {"reference": "teacher", "test": t.name,
                                                                "metrics": list(t.metrics)},
                                                   {"candidates": candidates[t.name], "teacher": self.teacher_art},
                                                   teach, p, f"{t.name} teacher")
        return out

    def _base_encoder(self) -> Artifact | None:
        """The bi-encoder students' starting point when the grid has bi-encoders: their model with their
        settings (layers, pooling, similarity, token limits) before any training. Read as a reference row,
        it shows what training changed."""
        if "bi" not in self.cfg.grid.archs:
            return None
        from rankdistill.models import resolve_model

        st = self.cfg.student
        path = resolve_model(st.model)
        settings = {"model": _model_identity(st.model), "layers": st.layers,
                    "pooling": st.pooling, "similarity": st.similarity, "max_query_length": st.query_max_length,
                    "max_doc_length": st.max_length}

        def fn(work: Path) -> dict:
            from rankdistill.models.bi_encoder import BiEncoder

            BiEncoder.from_pretrained(path, pooling=st.pooling, similarity=st.similarity, layers=st.layers or None,
                                      max_query_length=st.query_max_length, max_doc_length=st.max_length
                                      ).save(work / "model")
            return {}

        return self._run("base", settings, {}, fn, Progress("base", 1), "bi-encoder students' starting point")

    # -- the whole study -----------------------------------------------------------------------------------
    def run(self) -> Path:
        from rankdistill.experiments.executors import make_executor
        from rankdistill.experiments.report import write_report
        from rankdistill.training.determinism import cublas_workspace

        start = time.perf_counter()
        with atomic_write(self.output / "config.resolved.json") as fh:
            fh.write(json.dumps(self.cfg.to_dict(), indent=2, default=str))
        e = self.cfg.executor
        # Ray is started (or joined) once, before the stages whose teacher scoring fans out over it too; the
        # other executors start when the cells do
        executor = make_executor(e.kind, e.address, e.gpus_per_cell, e.cpus_per_cell, e.workers) \
            if e.kind == "ray" else None
        env = contextlib.ExitStack()
        if self.cfg.student.deterministic:  # before the first GPU work: torch may read it once per process
            env.enter_context(cublas_workspace())  # the cell processes, spawned, inherit it
        try:
            candidates = self.candidates()
            self.teacher()
            mined = self.mine()
            scores = self.score(mined)
            diags = self.diagnose(mined, scores)
            groups = self.select(mined, diags)
            refs = self.reference_runs(candidates)
            cells = self.cells()
            jobs = [self.cell_job(c, groups, scores, candidates) for c in cells]
            if executor is None:
                executor = make_executor(e.kind, e.address, e.gpus_per_cell, e.cpus_per_cell, e.workers)
            p = Progress("train+evaluate", len(jobs))
            # seed-major order: every cell's first seed finishes before any second seed starts, so a run cut
            # short leaves whole seeds that a run with fewer seeds reports from the cache; budget-study cells
            # come last
            seeds = sorted({c.seed for c in cells})
            order = sorted(range(len(jobs)), key=lambda i: (cells[i].budget != 0, seeds.index(cells[i].seed), i))
            done = executor.map(run_cell, [(jobs[i],) for i in order],
                                on_done=lambda k, r: p.step(cells[order[k]].label, r["train_reused"]))
        finally:
            if executor is not None:
                executor.close()
            env.close()
        results = [r for _, r in sorted(zip(order, done), key=lambda pair: pair[0])]
        cell_arts = []
        for cell, res in zip(cells, results):
            train_art = self.store.get("train", res["train"])
            evals = {t: self.store.get("evaluate", h) for t, h in res["evals"].items()}
            cell_arts.append((cell, train_art, evals))
            self.used.append(train_art)
            self.used.extend(evals.values())
        report = write_report(self, mined, scores, diags, groups, refs, cell_arts)
        self._write_manifest(time.perf_counter() - start)
        return report

    def _write_manifest(self, seconds: float) -> None:
        per_stage: dict[str, dict[str, float]] = {}
        for art in {a.path: a for a in self.used}.values():
            s = per_stage.setdefault(art.stage, {"artifacts": 0, "seconds": 0.0, "gpu_seconds": 0.0, "bytes": 0})
            s["artifacts"] += 1
            s["seconds"] += art.manifest.get("seconds", 0.0)
            s["gpu_seconds"] += art.manifest.get("gpu_seconds", 0.0)
            s["bytes"] += art.manifest.get("bytes", 0)
        manifest = {"config": self.cfg.source, "config_hash": stable_hash(self.cfg.to_dict()),
                    "this_run_seconds": round(seconds, 1), "stages": per_stage,
                    "artifacts": sorted(f"{a.stage}/{a.hash}" for a in self.used)}
        (self.output / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        width = max(len(s) for s in per_stage)
        logger.info("done in %s; time recorded per stage (seconds when first computed):", _dur(seconds))
        for stage, s in per_stage.items():
            logger.info("  %-*s  %3d artifacts  %8.1fs  %8.1f GPU-s", width, stage, s["artifacts"], s["seconds"],
                        s["gpu_seconds"])
