"""The study config: a TOML file validated completely before anything runs.

A config is data: nothing in it is evaluated. Unknown keys, wrong types, impossible combinations and missing
files are reported with the key's dotted path. See ``examples/quickstart.toml`` for every section.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankdistill.errors import UserInputError
from rankdistill.tomlines import decode_error, located

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "bm25", "dense", "teacher", "ensemble", "run")
LOSSES = ("lce", "infonce", "margin_mse", "ranknet", "kl", "listnet")
TEACHER_LOSSES = ("margin_mse", "ranknet", "kl", "listnet")
ARCHS = ("bi", "cross")


@dataclass(frozen=True)
class TrainData:
    dataset: str
    split: str = "train"
    max_queries: int = 0
    """Use only the first N training queries (in the query file's order); 0 = all."""


@dataclass(frozen=True)
class TestCollection:
    name: str
    dataset: str
    split: str = "test"
    mode: str = "rerank"
    """``rerank`` a candidate run, or ``retrieve`` over the whole corpus (bi-encoders only)."""
    candidates: str = "bm25"
    """``bm25`` (computed here), ``dataset`` (the manifest's candidates) or a TREC run file."""
    depth: int = 100
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class FirstStage:
    k1: float = 1.2
    b: float = 0.75


@dataclass(frozen=True)
class TeacherTrain:
    model: str | None = None
    arch: str = "cross"
    """``cross`` (the paper's teacher) or ``bi`` (cheaper to train and to score on a CPU)."""
    layers: int = 0
    loss: str = "lce"
    strategy: str = "bm25"
    group_size: int = 8
    budget_docs: int = 20000
    max_length: int = 256
    query_max_length: int = 32
    batch_size: int = 8
    lr: float = 5e-5
    head_lr: float = 0.0
    """Peak learning rate of a cross-encoder teacher's new scoring head; 0 = ``lr``."""
    seed: int = 0
    max_queries: int = 0
    """Train the teacher on the first N queries of the training split (by the miner's order); 0 = all of them,
    whatever ``train.max_queries`` says for the students."""
    folds: int = 1
    """Cross-fit the teacher (:mod:`rankdistill.teachers.crossfit`): with k >= 2, k members each train on the
    teacher's queries less one fold, on (k - 1)/k of ``budget_docs`` (as many epochs over their queries as one
    teacher over all), and each training query is labelled, mined and filtered by the member that never saw
    it; test queries get the members' mean. 1 = one teacher trained on every query."""


@dataclass(frozen=True)
class Teacher:
    model: str | None = None
    train: TeacherTrain | None = None
    max_length: int = 256
    batch_size: int = 64


@dataclass(frozen=True)
class Mining:
    depth: int = 100
    pool: int = 0
    """Negatives kept per query; 0 = 2 x the largest group size."""
    teacher_top: int = 100
    dense_model: str | None = None
    dense_max_length: int = 0
    """Token limit of the dense retriever; 0 = the model's own."""
    ensemble_systems: tuple[str, ...] = ("bm25", "dense")
    ensemble_per_system: int = 10
    ensemble_margin: float = 0.5
    false_negative_margin: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Grid:
    strategies: tuple[str, ...] = ("random", "bm25")
    losses: tuple[str, ...] = ("lce",)
    archs: tuple[str, ...] = ("bi",)
    group_sizes: tuple[int, ...] = (8,)
    selections: tuple[str, ...] = ("all",)
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class EntropyStudy:
    """Students trained on bands of the teacher's ranking entropy over one strategy's groups (the paper's
    entropy study: cross-encoders on quartiles of the BM25 domain), beside the same cells on all queries.

    Cells: ``archs x losses x bands x seeds`` on ``strategy`` at ``group_size``, each band a selection of
    :mod:`rankdistill.diagnostics.selections` on the normalised softmax entropy (positive included). Every band
    is trained with the same document budget as the main grid. The reference cells (all queries) are the main
    grid's when it has them, and are added otherwise.
    """

    strategy: str = "bm25"
    archs: tuple[str, ...] = ("cross",)
    losses: tuple[str, ...] = ("lce", "margin_mse")
    bands: tuple[str, ...] = ("keep_lower_quartile", "keep_second_quartile", "keep_third_quartile",
                              "keep_upper_quartile")
    seeds: tuple[int, ...] = ()
    """Default: ``grid.seeds``."""
    group_size: int = 0
    """Default: the largest of ``grid.group_sizes``."""


@dataclass(frozen=True)
class Student:
    model: str | None = None
    cross_model: str | None = None
    """Backbone of cross-encoder students (default: ``model``), e.g. ELECTRA-base beside a BERT-base bi-encoder."""
    layers: int = 0
    max_length: int = 256
    query_max_length: int = 32
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    warmup: float = 0.1
    budget_docs: int = 100_000
    pooling: str = "mean"
    similarity: str = "dot"
    temperature: float = 1.0
    bf16: bool = True
    """bf16 autocast where the GPU supports it (``train --bf16 auto``); false trains in fp32 (``--bf16 off``)."""
    deterministic: bool = False
    """Deterministic kernels (``train --deterministic``): each cell's GPU run repeats byte for byte, at some cost
    in speed. Off, two GPU runs of a seed differ by about the equivalence margin (docs/results.md)."""
    cross_lr: float = 0.0
    """Peak learning rate of cross-encoder students; 0 = ``lr``."""
    cross_head_lr: float = 0.0
    """Peak learning rate of the cross-encoder students' new scoring head (pooler + classifier); 0 = their
    learning rate."""


@dataclass(frozen=True)
class Comparison:
    baseline: str = "random"
    """The strategy every other strategy is compared against, within each (arch, loss, selection)."""
    metric: str = "nDCG@10"
    margin: float = 0.01
    alpha: float = 0.05
    correction: str = "holm"


@dataclass(frozen=True)
class Diagnostics:
    encoder: str | None = None
    max_length: int = 0
    """Token limit of the locality encoder; 0 = the model's own. Equal to ``mining.dense_max_length`` with the
    same encoder, the dense-mining embeddings are reused."""
    temperature: float = 1.0
    metric: str = "cosine"
    alpha: float = 0.95


@dataclass(frozen=True)
class Executor:
    kind: str = "local"
    """``local`` (one cell after another), ``processes`` (``workers`` cells at once in fresh processes on this
    machine, sharing its GPU: small students leave most of a large GPU idle) or ``ray``."""
    address: str | None = None
    gpus_per_cell: float = 0.0
    cpus_per_cell: float = 1.0
    workers: int = 4
    """Cells at once with ``kind = "processes"``."""


@dataclass(frozen=True)
class BudgetStudy:
    """Cells trained with other document budgets than ``student.budget_docs``, beside the same cells at the
    study's budget, so that whether the budget let the students settle is read on the test collections (a
    paired TOST of each budget against the study's, per collection), not only from training losses.

    Cells: ``archs x losses x strategies x budgets x seeds`` on all queries at ``group_size``. Empty lists
    default to the grid's (``seeds`` too); the reference cells at the study's budget are the grid's when it
    has them, and are added otherwise. Budget cells run after every other cell, so a study cut short finishes
    its main grid first.
    """

    budgets: tuple[int, ...] = ()
    strategies: tuple[str, ...] = ()
    archs: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    group_size: int = 0
    """Default: the largest of ``grid.group_sizes``."""

    def axes(self, grid: Grid) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[int, ...], int]:
        """(archs, losses, strategies, seeds, group size) with the grid's defaults filled in."""
        return (self.archs or grid.archs, self.losses or grid.losses, self.strategies or grid.strategies,
                self.seeds or grid.seeds, self.group_size or max(grid.group_sizes))


@dataclass(frozen=True)
class StudyConfig:
    name: str
    train: TrainData
    tests: tuple[TestCollection, ...]
    teacher: Teacher | None = None
    first_stage: FirstStage = field(default_factory=FirstStage)
    mining: Mining = field(default_factory=Mining)
    grid: Grid = field(default_factory=Grid)
    student: Student = field(default_factory=Student)
    comparison: Comparison = field(default_factory=Comparison)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    entropy_study: EntropyStudy | None = None
    budget_study: BudgetStudy | None = None
    executor: Executor = field(default_factory=Executor)
    description: str = ""
    notes: tuple[str, ...] = ()
    """Free text copied into the report (e.g. how the quick start was shrunk)."""
    data_dir: str | None = None
    source: str = ""
    overrides: tuple[str, ...] = ()
    """``--set KEY=VALUE`` overrides applied on top of the file (set by :func:`load_config`, not in TOML)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- parsing ----------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str, path: Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, path)
            except UserInputError as e:
                errors.append(e)
        if len(errors) == 1:  # one type allowed (an optional table or value): its own error names the key
            raise errors[0]
        raise UserInputError(f"'{key}' has the wrong type ({type(value).__name__})", path=path,
                             fix=f"expected {' or '.join(_type_name(a) for a in args if a is not type(None))}")
    if origin is tuple:
        if not isinstance(value, list):
            raise UserInputError(f"'{key}' must be a list", path=path)
        inner = args[0]
        return tuple(_coerce(v, inner, f"{key}[{i}]", path) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserInputError(f"'{key}' must be a table", path=path)
        return _build(tp, value, key, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"'{key}' must be a number", path=path)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"'{key}' must be an integer", path=path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"'{key}' must be true or false", path=path)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"'{key}' must be a string", path=path)
        return value
    return value  # pragma: no cover


_TOML_NAMES = {"tests": "test"}
"""Fields whose name in the TOML file differs (``[[test]]`` tables fill ``StudyConfig.tests``): messages use it."""


def _build(cls: type, table: dict, prefix: str, path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("source", "overrides")}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        known = ", ".join(_TOML_NAMES.get(n, n) for n in fields)
        raise UserInputError(f"unknown key '{where}{unknown[0]}'", path=path,
                             fix=f"known keys{' in [' + prefix + ']' if prefix else ''}: {known}")
    kwargs = {}
    for name, f in fields.items():
        shown = _TOML_NAMES.get(name, name)
        key = f"{prefix}.{shown}" if prefix else shown
        if name in table:
            kwargs[name] = _coerce(table[name], hints[name], key, path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserInputError(f"missing required key '{key}'", path=path)
    return cls(**kwargs)


def _check_choice(values: tuple[str, ...] | str, allowed: tuple[str, ...], key: str, path: Path) -> None:
    for v in (values,) if isinstance(values, str) else values:
        if v not in allowed:
            raise UserInputError(f"'{key}' has unknown value {v!r}", path=path, fix=f"one of {', '.join(allowed)}")


def _check_lists(lists: Sequence[tuple[str, Sequence[Any]]], path: Path, *, non_empty: bool) -> None:
    """Each ``(key, values)`` list has no repeated value and, with ``non_empty``, at least one."""
    for key, values in lists:
        if non_empty and not values:
            raise UserInputError(f"'{key}' is empty", path=path, fix="give at least one value")
        if len(set(values)) != len(values):
            raise UserInputError(f"'{key}' repeats a value", path=path)


def _selection_known(name: str) -> bool:
    """``all``, a registered selection, or ``keep_quantile_band:LO:HI`` with 0 <= LO < HI <= 1."""
    if name == "all":
        return True
    from rankdistill.diagnostics.selections import SELECTIONS, keep_quantile_band

    if name in SELECTIONS:
        return True
    parts = name.split(":")
    if parts[0] != "keep_quantile_band" or len(parts) != 3:
        return False
    try:
        keep_quantile_band(float(parts[1]), float(parts[2]))
    except (ValueError, UserInputError):
        return False
    return True


_POSITIVE = (("student.lr", lambda c: c.student.lr, 0.0), ("student.batch_size", lambda c: c.student.batch_size, 0),
             ("student.grad_accum", lambda c: c.student.grad_accum, 0),
             ("student.max_length", lambda c: c.student.max_length, 0),
             ("student.query_max_length", lambda c: c.student.query_max_length, 0),
             ("student.temperature", lambda c: c.student.temperature, 0.0),
             ("mining.depth", lambda c: c.mining.depth, 0), ("mining.teacher_top", lambda c: c.mining.teacher_top, 0),
             ("teacher.max_length", lambda c: c.teacher.max_length if c.teacher else 8, 7),
             ("teacher.batch_size", lambda c: c.teacher.batch_size if c.teacher else 1, 0),
             ("diagnostics.temperature", lambda c: c.diagnostics.temperature, 0.0))
"""(key, value, bound): settings that must be above ``bound``."""

_NON_NEGATIVE = (("student.cross_lr", lambda c: c.student.cross_lr),
                 ("student.cross_head_lr", lambda c: c.student.cross_head_lr),
                 ("student.layers", lambda c: c.student.layers), ("train.max_queries", lambda c: c.train.max_queries),
                 ("mining.pool", lambda c: c.mining.pool),
                 ("mining.dense_max_length", lambda c: c.mining.dense_max_length),
                 ("diagnostics.max_length", lambda c: c.diagnostics.max_length))
"""Settings where 0 means "the default" and a negative value is meaningless."""


def _validate_values(cfg: StudyConfig, path: Path) -> None:
    """Ranges of the numeric settings and the choices and model paths the stages would only meet later (after
    the teacher, mining or every cell), checked before anything runs."""
    from rankdistill.diagnostics.locality import METRICS
    from rankdistill.retrieval.bm25 import check_bm25_parameters

    for key, get, bound in _POSITIVE:
        if not get(cfg) > bound:
            raise UserInputError(f"'{key}' must be greater than {bound:g}, got {get(cfg)!r}", path=path)
    for key, get in _NON_NEGATIVE:
        if get(cfg) < 0:
            raise UserInputError(f"'{key}' must not be negative (0 = the default), got {get(cfg)!r}", path=path)
    if not 0 <= cfg.student.warmup < 1:
        raise UserInputError(f"'student.warmup' is the share of steps spent warming up, in [0, 1); got "
                             f"{cfg.student.warmup!r}", path=path)
    tt = cfg.teacher.train if cfg.teacher is not None else None
    if tt is not None:
        for key, value, bound in (("budget_docs", tt.budget_docs, 0), ("group_size", tt.group_size, 1),
                                  ("batch_size", tt.batch_size, 0), ("lr", tt.lr, 0.0),
                                  ("max_length", tt.max_length, 7)):
            if not value > bound:
                raise UserInputError(f"'teacher.train.{key}' must be greater than {bound:g}, got {value!r}",
                                     path=path)
    check_bm25_parameters(cfg.first_stage.k1, cfg.first_stage.b, ("'first_stage.k1'", "'first_stage.b'"), path)
    _check_choice(cfg.diagnostics.metric, METRICS, "diagnostics.metric", path)
    if not 0 < cfg.diagnostics.alpha <= 1:
        raise UserInputError(f"'diagnostics.alpha' is a quantile in (0, 1], got {cfg.diagnostics.alpha!r}", path=path)
    models = [("student.model", cfg.student.model), ("student.cross_model", cfg.student.cross_model),
              ("teacher.model", cfg.teacher.model if cfg.teacher else None),
              ("teacher.train.model", tt.model if tt else None), ("mining.dense_model", cfg.mining.dense_model),
              ("diagnostics.encoder", cfg.diagnostics.encoder)]
    for key, model in models:
        if model is not None:
            _resolved_model(key, model, path)
    _validate_training(cfg, path)
    for i, t in enumerate(cfg.tests):
        if t.depth < 1:
            raise UserInputError(f"'test[{i}].depth' must be at least 1, got {t.depth}", path=path)


def _resolved_model(key: str, model: str | None, path: Path) -> str:
    """The model a config's ``key`` names (a folder relative to the config, a path, a hub name; None: the
    default encoder), as :func:`~rankdistill.models.resolve_model` gives it; its errors name ``key``."""
    from rankdistill.models import resolve_model

    local = model if model is None or Path(model).is_absolute() or not (path.parent / model).exists() \
        else str(path.parent / model)
    try:
        return resolve_model(local)
    except UserInputError as e:
        raise UserInputError(f"'{key}': {e.message}", path=path, fix=e.fix) from None


def _validate_training(cfg: StudyConfig, path: Path) -> None:
    """What the ``train`` verb would refuse only when the teacher or a cell comes to be trained, checked by the
    same code (:class:`~rankdistill.training.budget.Budget`, the cross-encoder's token budget, the model's layer
    count) and named by config key: a budget below one optimizer step, a cross-encoder length that leaves the
    document no tokens, more layers than a local model has, a model folder without a usable config."""
    from rankdistill.models.backbone import transformer_dir
    from rankdistill.models.cross_encoder import CrossEncoderSettings
    from rankdistill.teachers.models import read_model_config
    from rankdistill.training.budget import Budget

    def check(key: str, make) -> Any:
        try:
            return make()
        except UserInputError as e:
            raise UserInputError(f"'{key}': {e.message}", path=path, fix=e.fix) from None

    st, tt = cfg.student, cfg.teacher.train if cfg.teacher is not None else None
    # the grid's cells at every group size (the entropy study's group size is one of them), the budget study's
    # at its own
    group = max(cfg.grid.group_sizes)
    check("student.budget_docs", lambda: Budget(st.budget_docs, st.batch_size, st.grad_accum, 1, group))
    archs = set(cfg.grid.archs)
    for study in (cfg.entropy_study, cfg.budget_study):
        if study is not None:
            archs.update(study.archs)
    bs = cfg.budget_study
    if bs is not None:
        for b in bs.budgets:
            check("budget_study.budgets",
                  lambda b=b: Budget(b, st.batch_size, st.grad_accum, 1, bs.group_size or group))
    if "cross" in archs:
        check("student.max_length", lambda: CrossEncoderSettings(st.max_length, st.query_max_length))
    layered = [("student.layers", st.layers, "student.model", st.model)]
    if "cross" in archs and st.cross_model:
        layered.append(("student.layers", st.layers, "student.cross_model", st.cross_model))
    if tt is not None:
        per_member = round(tt.budget_docs * (tt.folds - 1) / tt.folds) if tt.folds > 1 else tt.budget_docs
        check("teacher.train.budget_docs", lambda: Budget(per_member, tt.batch_size, 1, 1, tt.group_size))
        if tt.arch == "cross":
            check("teacher.train.max_length", lambda: CrossEncoderSettings(tt.max_length, tt.query_max_length))
        layered.append(("teacher.train.layers", tt.layers, "teacher.train.model", tt.model))
    for key, layers, model_key, model in layered:
        resolved = _resolved_model(model_key, model, path)
        if not Path(resolved).is_dir():  # a hub name: its config is not fetched to validate (the stage will)
            continue
        config = check(model_key, lambda resolved=resolved: read_model_config(transformer_dir(resolved)))
        have = getattr(config, "num_hidden_layers", None)
        if layers and have is not None and layers > have:
            raise UserInputError(f"'{key}' is {layers}, but {model_key} has {have} layers", path=path,
                                 fix=f"use 1 to {have}, or 0 for all of them")


def _validate_tests(cfg: StudyConfig, path: Path, root: str | None) -> None:
    """The training and test collections exist (under ``root`` too), each has its split (and the manifest's
    candidates where a test asks for them), its measures parse, and the comparison's measure is among them
    (else the report fails after every cell has run)."""
    from rankdistill.data import load_dataset
    from rankdistill.data.runs import judged_part, read_run
    from rankdistill.evaluation.measures import default_metrics, parse_metrics

    def split_of(spec: str, split: str, key: str):
        if spec.startswith("irds:"):
            return None
        ds = load_dataset(_rel(spec, path), data_dir=root)
        if split not in ds.splits:
            raise UserInputError(f"'{key}' {split!r} is not a split of {spec}; it has {', '.join(ds.split_names())}",
                                 path=path, fix="use one of them")
        return ds

    split_of(cfg.train.dataset, cfg.train.split, "train.split")
    metric = cfg.comparison.metric
    for i, t in enumerate(cfg.tests):
        ds = split_of(t.dataset, t.split, f"test[{i}].split")
        if ds is None:
            continue
        threshold = ds.rel_threshold(t.split)
        if t.candidates == "dataset" and ds.splits[t.split].candidates is None:
            raise UserInputError(f"'test[{i}].candidates' is 'dataset' but split {t.split!r} of {t.dataset} names no "
                                 "candidates", path=path, fix="use bm25 or a TREC run file")
        if t.candidates != "bm25":  # parsed now (file:line errors), not first when the study reaches the tests
            given = ds.candidates(t.split) if t.candidates == "dataset" else read_run(path.parent / t.candidates)
            if not judged_part(given or {}, ds.qrels(t.split)):
                raise UserInputError(f"'test[{i}].candidates' ({t.candidates}) holds no judged query of split "
                                     f"{t.split!r} of {t.dataset}", path=path,
                                     fix="give candidates made for the test's dataset and split")
        names = list(t.metrics) or default_metrics(threshold)
        try:
            parse_metrics(names, threshold)
        except UserInputError as e:
            raise UserInputError(f"'test[{i}].metrics': {e.message}", path=path, fix=e.fix) from None
        if metric not in names:
            raise UserInputError(f"'comparison.metric' {metric!r} is not measured on test {t.name!r} (it measures "
                                 f"{', '.join(names)})", path=path, fix=f"add {metric!r} to test[{i}].metrics")


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...], path: Path) -> dict:
    """Apply ``KEY=VALUE`` overrides to a parsed config: ``KEY`` is a dotted path (``student.budget_docs``;
    ``test.NAME.depth`` for the test table called NAME) and ``VALUE`` a TOML value (``[0, 1]``, ``1e-4``,
    ``"cls"``); a value that is not valid TOML is taken as a string. ``TABLE=none`` leaves out an optional
    table (``[teacher]``, ``[entropy_study]``, ``[budget_study]``), e.g. to report on a study without it; a key of
    an optional table the file does not have is refused rather than creating the table with defaults."""
    optional = {name for name, tp in typing.get_type_hints(StudyConfig).items()
                if type(None) in typing.get_args(tp) and any(map(dataclasses.is_dataclass, typing.get_args(tp)))}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserInputError(f"override {item!r} is not KEY=VALUE", fix="e.g. --set student.budget_docs=2048")
        if "." not in key and text.strip() == "none":
            if key not in optional:
                raise UserInputError(f"override {item!r}: only an optional table can be left out", path=path,
                                     fix=f"one of {', '.join(sorted(optional))}")
            raw.pop(key, None)
            continue
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            if text.strip()[:1] in ('[', '{', '"', "'"):  # meant as an array, table or quoted string
                raise UserInputError(f"override {item!r}: {text.strip()!r} is not a TOML value ({e})",
                                     fix="close the brackets or quotes, e.g. --set 'grid.seeds=[0, 1]'") from None
            value = text.strip()  # a bare word: a string
        parts = key.split(".")
        node: Any = raw
        if parts[0] == "test":
            if len(parts) != 3:
                raise UserInputError(f"override {key!r}: address a test as test.NAME.KEY", path=path)
            tests = [t for t in raw.get("test", []) if isinstance(t, dict) and t.get("name") == parts[1]]
            if not tests:
                raise UserInputError(f"override {key!r}: no [[test]] named {parts[1]!r}", path=path)
            tests[0][parts[2]] = value
            continue
        if parts[0] in optional and not isinstance(raw.get(parts[0]), dict):
            # one key would bring a whole optional section (a study, a teacher) into the run with defaults
            raise UserInputError(f"override {key!r}: the config has no [{parts[0]}] table", path=path,
                                 fix=f"add a [{parts[0]}] table to the file, or leave out this --set")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UserInputError(f"override {key!r}: '{part}' is not a table", path=path)
            node = nxt
        node[parts[-1]] = value
    return raw


def _short_forms(raw: dict) -> dict:
    """``executor = "ray"``, the design's short form of ``[executor] kind = "ray"``, as the table (before the
    overrides, so that ``--set executor.workers=N`` finds a table, and after them for ``--set executor=...``)."""
    if isinstance(raw.get("executor"), str):
        raw["executor"] = {"kind": raw["executor"]}
    return raw


def load_config(path: str | os.PathLike, data_dir: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read, type-check and validate a study config; paths inside resolve relative to the file.

    ``overrides`` (``KEY=VALUE``, see :func:`apply_overrides`) change values before validation; they are
    recorded in the config's ``overrides`` field.
    """
    p = Path(path)
    if p.is_dir():
        raise UserInputError("the config is a directory", path=p, fix="give the study's .toml file")
    if not p.is_file():
        raise UserInputError("config file not found", path=p)
    try:
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise decode_error(e, p) from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=p,
                             fix="save the config as UTF-8") from None
    except OSError as e:
        raise UserInputError(f"cannot read the config ({e.strerror})", path=p) from None
    raw = _short_forms(apply_overrides(_short_forms(dict(raw)), overrides, p))  # in the file, or set whole
    tests = raw.get("test")
    names = [t.get("name") for t in tests if isinstance(t, dict)] if isinstance(tests, list) else []
    try:
        return _config_from(raw, p, data_dir, overrides)
    except UserInputError as e:  # one about a value given by --set says so; else the key's line in the file
        blamed = _blame_override(e, overrides, names)
        raise (located(e, p) if blamed is e else blamed) from None


def _config_from(raw: dict, p: Path, data_dir: str | None, overrides: list[str] | tuple[str, ...]) -> StudyConfig:
    tests = raw.pop("test", None)
    if tests is None:
        raise UserInputError("missing [[test]] tables", path=p, fix="add at least one test collection")
    if not isinstance(tests, list):
        raise UserInputError("'test' must be an array of tables ([[test]])", path=p)
    raw["tests"] = tests
    if "name" not in raw:
        raw["name"] = p.stem
    cfg: StudyConfig = _build(StudyConfig, raw, "", p)
    cfg = dataclasses.replace(cfg, source=str(p.resolve()), overrides=tuple(overrides))
    validate(cfg, p, data_dir)
    return cfg


def _blame_override(error: UserInputError, overrides: list[str] | tuple[str, ...],
                    test_names: list | None = None) -> UserInputError:
    """``error`` saying which ``--set`` gave the value it is about (its message names the key), if one did. A
    test's key is set as ``test.NAME.KEY`` and named ``test[i].KEY`` in messages (``test_names`` in order)."""
    names = list(test_names or [])
    for item in reversed(overrides):  # the last --set of a key is the one in force
        key = item.partition("=")[0].strip()
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "test" and parts[1] in names:
            key = f"test[{names.index(parts[1])}].{'.'.join(parts[2:])}"
        if key and f"'{key}" in error.message:
            return UserInputError(f"{error.message}, as given by --set {item}", path=error.path, line=error.line,
                                  fix=error.fix)
    return error


def validate(cfg: StudyConfig, path: Path, data_dir: str | None = None) -> None:
    """Everything that can be checked before running: choices, combinations, files."""
    g = cfg.grid
    _check_choice(g.strategies, STRATEGIES, "grid.strategies", path)
    _check_choice(g.losses, LOSSES, "grid.losses", path)
    _check_choice(g.archs, ARCHS, "grid.archs", path)
    for i, name in enumerate(g.selections):
        if not _selection_known(name):
            from rankdistill.diagnostics.selections import SELECTIONS

            raise UserInputError(f"'grid.selections[{i}]' has unknown value {name!r}", path=path,
                                 fix=f"one of all, {', '.join(sorted(SELECTIONS))}, keep_quantile_band:LO:HI")
    _check_lists((("grid.strategies", g.strategies), ("grid.losses", g.losses), ("grid.archs", g.archs),
                  ("grid.group_sizes", g.group_sizes), ("grid.selections", g.selections), ("grid.seeds", g.seeds)),
                 path, non_empty=True)
    if any(s < 2 for s in g.group_sizes):
        raise UserInputError("'grid.group_sizes' must be at least 2 (a positive and a negative)", path=path)
    has_teacher = cfg.teacher is not None and (cfg.teacher.model is not None or cfg.teacher.train is not None)
    needs = [f"loss {x!r}" for x in g.losses if x in TEACHER_LOSSES]
    needs += [f"strategy {x!r}" for x in g.strategies if x in ("teacher", "ensemble")]
    needs += [f"selection {x!r}" for x in g.selections if x != "all"]
    if needs and not has_teacher:
        raise UserInputError(f"{needs[0]} needs teacher scores but the config has no [teacher]", path=path,
                             fix="add [teacher] with 'model' or a [teacher.train] recipe")
    if cfg.teacher is not None:
        if cfg.teacher.model is not None and cfg.teacher.train is not None:
            raise UserInputError("'teacher.model' and [teacher.train] are exclusive", path=path,
                                 fix="give a model, or a recipe to train one")
        if cfg.teacher.train is not None:
            _check_choice(cfg.teacher.train.loss, ("lce", "infonce"), "teacher.train.loss", path)
            _check_choice(cfg.teacher.train.arch, ARCHS, "teacher.train.arch", path)
            _check_choice(cfg.teacher.train.strategy, ("random", "bm25"), "teacher.train.strategy", path)
            if not 1 <= cfg.teacher.train.folds <= 10:
                raise UserInputError(f"'teacher.train.folds' must be 1 (no cross-fitting) to 10, got "
                                     f"{cfg.teacher.train.folds}", path=path, fix="use 2 to cross-fit the teacher")
    if "run" in g.strategies:
        raise UserInputError("'grid.strategies' value 'run' needs a candidates file per query set; use "
                             "`rankdistill mine --strategy run` outside the runner", path=path)
    for i, sys_name in enumerate(cfg.mining.ensemble_systems):
        if sys_name not in ("bm25", "dense") and not Path(path.parent, sys_name).is_file():
            raise UserInputError(f"'mining.ensemble_systems[{i}]' is neither bm25, dense nor an existing run file",
                                 path=path)
    if "ensemble" in g.strategies:  # its union is padded with random documents to the group's need, not the pool
        pool = cfg.mining.pool or 2 * max(g.group_sizes)
        need = max(g.group_sizes) - 1
        n_systems = len(cfg.mining.ensemble_systems)
        most = cfg.mining.ensemble_per_system * n_systems
        if most < need:
            logger.warning("%s: the ensemble's %d systems give at most %d negatives per query for groups of %d, so "
                           "at least %.0f%% of every ensemble group will be random documents; set "
                           "mining.ensemble_per_system to at least %d to let the systems fill it", path.name,
                           n_systems, most, need + 1, 100 * (need - most) / need, -(-need // n_systems))
        elif most < pool:
            logger.info("%s: the ensemble's %d systems give at most %d negatives per query, so its pools hold at "
                        "most %d of the %d asked for (random documents pad a union only to the %d a group needs)",
                        path.name, n_systems, most, most, pool, need)
    if cfg.comparison.baseline not in g.strategies:
        raise UserInputError(f"'comparison.baseline' {cfg.comparison.baseline!r} is not one of grid.strategies",
                             path=path)
    if cfg.comparison.margin <= 0:
        raise UserInputError("'comparison.margin' must be > 0", path=path)
    if not 0 < cfg.comparison.alpha < 0.5:
        raise UserInputError("'comparison.alpha' must be in (0, 0.5)", path=path)
    _check_choice(cfg.comparison.correction, ("holm", "bh", "none"), "comparison.correction", path)
    _check_choice(cfg.executor.kind, ("local", "processes", "ray"), "executor.kind", path)
    if cfg.executor.workers < 1:
        raise UserInputError("'executor.workers' must be at least 1", path=path)
    if cfg.entropy_study is not None:
        _validate_entropy_study(cfg, has_teacher, path)
    if cfg.budget_study is not None:
        _validate_budget_study(cfg, has_teacher, path)
    _check_choice(cfg.student.pooling, ("mean", "cls"), "student.pooling", path)
    _check_choice(cfg.student.similarity, ("dot", "cosine"), "student.similarity", path)
    if cfg.student.budget_docs < 1:
        raise UserInputError("'student.budget_docs' must be positive", path=path)
    names = [t.name for t in cfg.tests]
    if len(set(names)) != len(names):
        raise UserInputError("two [[test]] tables share a name", path=path)
    root = data_dir or cfg.data_dir
    if cfg.data_dir and not data_dir:
        root = str((path.parent / cfg.data_dir).resolve())
    for i, t in enumerate(cfg.tests):
        _check_choice(t.mode, ("rerank", "retrieve"), f"test[{i}].mode", path)
        if t.mode == "retrieve" and "cross" in g.archs:
            pass  # cross-encoders are evaluated by re-ranking; the runner skips retrieve for them
        if t.candidates not in ("bm25", "dataset") and not (path.parent / t.candidates).is_file():
            raise UserInputError(f"'test[{i}].candidates' file not found: {t.candidates}", path=path,
                                 fix="give bm25, dataset or a TREC run path relative to the config")
    _validate_tests(cfg, path, root)
    _validate_values(cfg, path)


def _validate_entropy_study(cfg: StudyConfig, has_teacher: bool, path: Path) -> None:
    e = cfg.entropy_study
    assert e is not None
    if not has_teacher:
        raise UserInputError("[entropy_study] needs teacher scores but the config has no [teacher]", path=path,
                             fix="add [teacher] with 'model' or a [teacher.train] recipe")
    if e.strategy not in cfg.grid.strategies:
        raise UserInputError(f"'entropy_study.strategy' {e.strategy!r} is not one of grid.strategies", path=path,
                             fix="its groups are mined, scored and diagnosed with the grid's strategies")
    _check_choice(e.archs, ARCHS, "entropy_study.archs", path)
    _check_choice(e.losses, LOSSES, "entropy_study.losses", path)
    for i, name in enumerate(e.bands):
        if name == "all" or not _selection_known(name):
            from rankdistill.diagnostics.selections import SELECTIONS

            raise UserInputError(f"'entropy_study.bands[{i}]' has unknown value {name!r}", path=path,
                                 fix=f"one of {', '.join(sorted(SELECTIONS))}, keep_quantile_band:LO:HI")
    _check_lists((("entropy_study.archs", e.archs), ("entropy_study.losses", e.losses),
                  ("entropy_study.bands", e.bands)), path, non_empty=True)
    _check_lists((("entropy_study.seeds", e.seeds),), path, non_empty=False)
    if e.group_size and e.group_size not in cfg.grid.group_sizes:
        raise UserInputError(f"'entropy_study.group_size' {e.group_size} is not one of grid.group_sizes",
                             path=path)


def _validate_budget_study(cfg: StudyConfig, has_teacher: bool, path: Path) -> None:
    b = cfg.budget_study
    assert b is not None
    if not b.budgets:
        raise UserInputError("'budget_study.budgets' is empty", path=path,
                             fix=f"give the budgets (documents) to set beside student.budget_docs = "
                                 f"{cfg.student.budget_docs}, e.g. [{cfg.student.budget_docs // 2}, "
                                 f"{cfg.student.budget_docs * 2}]")
    for i, n in enumerate(b.budgets):
        if n < 1:
            raise UserInputError(f"'budget_study.budgets[{i}]' must be positive", path=path)
        if n == cfg.student.budget_docs:
            raise UserInputError(f"'budget_study.budgets[{i}]' is the study's own budget ({n})", path=path,
                                 fix="the cells at student.budget_docs are the reference; list the other budgets")
    for i, s in enumerate(b.strategies):
        if s not in cfg.grid.strategies:
            raise UserInputError(f"'budget_study.strategies[{i}]' {s!r} is not one of grid.strategies", path=path,
                                 fix="its groups are mined and scored with the grid's strategies")
    _check_choice(b.archs, ARCHS, "budget_study.archs", path)
    _check_choice(b.losses, LOSSES, "budget_study.losses", path)
    if not has_teacher and any(lo in TEACHER_LOSSES for lo in b.losses or cfg.grid.losses):
        raise UserInputError("[budget_study] has a distillation loss but the config has no [teacher]", path=path,
                             fix="add [teacher], or keep budget_study.losses to lce/infonce")
    _check_lists((("budget_study.budgets", b.budgets), ("budget_study.strategies", b.strategies),
                  ("budget_study.archs", b.archs), ("budget_study.losses", b.losses), ("budget_study.seeds", b.seeds)),
                 path, non_empty=False)  # empty lists default to the grid's
    if b.group_size and b.group_size not in cfg.grid.group_sizes:
        raise UserInputError(f"'budget_study.group_size' {b.group_size} is not one of grid.group_sizes",
                             path=path)


def _rel(spec: str, path: Path) -> str:
    """A dataset spec relative to the config file when that path exists, else unchanged (for data-dir lookup)."""
    if spec.startswith("irds:"):
        return spec
    candidate = path.parent / spec
    return str(candidate) if candidate.exists() else spec
