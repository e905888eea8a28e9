"""Training configuration: frozen dataclasses, validated before any compute, saved resolved beside the model.

``TrainConfig(data=DataConfig(...), model=ModelConfig(...), loss=LossConfig(...), optim=OptimConfig(...),
runtime=RuntimeConfig(...))``; :meth:`TrainConfig.from_dict` reads the same structure from a TOML/JSON
mapping (sections ``data``, ``model``, ``loss``, ``optim``, ``runtime``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

from rankdistill.errors import UserInputError, check_field_types
from rankdistill.losses import LOSSES, MARGIN_PAIRS, RANKNET_TARGETS, RANKNET_TIES, get_loss

ARCHS = ("bi", "cross")
MISSING_SCORES = ("error", "skip")


@dataclass(frozen=True)
class DataConfig:
    """Where the training data comes from."""

    dataset: str
    groups: str
    split: str = "train"
    scores: str | None = None
    teacher_id: str | None = None
    group_size: int = 16
    missing_scores: str = "error"
    data_dir: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The student: architecture, starting weights and how much text it reads."""

    arch: str = "bi"
    model: str | None = None
    """A Hugging Face directory or name; ``None`` = the bundled all-MiniLM-L6-v2."""
    layers: int | None = None
    pooling: str | None = None
    """Bi-encoder pooling, ``cls`` or ``mean``; ``None`` = what the model directory says, else ``cls``."""
    similarity: str = "dot"
    max_query_length: int = 32
    max_doc_length: int = 192
    max_length: int = 256
    """Cross-encoder: tokens of the whole (query, document) pair."""


@dataclass(frozen=True)
class LossConfig:
    """The loss and its options (``None`` = the loss's own default)."""

    name: str = "kl"
    temperature: float | None = None
    pairs: str | None = None
    targets: str | None = None
    ties: str | None = None
    t2_scaling: bool | None = None
    in_batch_negatives: bool | None = None
    """Bi-encoder only, for losses without a teacher; ``None`` = on for ``infonce``, off otherwise."""

    def options(self) -> dict:
        """The loss options that were set."""
        opts = {"temperature": self.temperature, "pairs": self.pairs, "targets": self.targets, "ties": self.ties,
                "t2_scaling": self.t2_scaling}
        return {k: v for k, v in opts.items() if v is not None}


@dataclass(frozen=True)
class OptimConfig:
    """Budget and optimisation: AdamW, linear warmup then linear decay to 0, gradient clipping."""

    budget_docs: int
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    head_lr: float | None = None
    """Peak learning rate of a cross-encoder's scoring head (the pooler and classifier that sit on the first
    token); ``None`` = ``lr``. A head put on an encoder trained with mean pooling (all-MiniLM-L6-v2) reads a
    first-token state that barely varies between documents, so with the backbone's rate it learns very slowly."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how to run; none of these change the trained weights (except ``device``/``bf16``)."""

    output: str
    save_every: int = 500
    keep_checkpoints: int = 2
    device: str = "auto"
    bf16: str = "auto"
    compile: bool = False
    deterministic: bool = False
    """Deterministic kernels (:mod:`rankdistill.training.determinism`): a GPU run that repeats byte for byte."""
    workers: int | None = None
    bucket_steps: int = 16
    pad_multiple: int = 8
    progress: bool = True
    overwrite: bool = False


# fields that do not change the result: a resumed run may differ in these
_RUNTIME_ONLY = {"output", "save_every", "keep_checkpoints", "workers", "progress", "overwrite"}
# settings added after runs were saved, with the value those runs had: left out of the fingerprint at that
# value, so that the runs saved before keep their fingerprints (and a saved config without them matches)
_ADDED_LATER = {("runtime", "deterministic"): False}


def _check_choice(value: object, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise UserInputError(f"{flag} {value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    data: DataConfig
    optim: OptimConfig
    runtime: RuntimeConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @property
    def in_batch_negatives(self) -> bool:
        if self.loss.in_batch_negatives is not None:
            return self.loss.in_batch_negatives
        return self.model.arch == "bi" and get_loss(self.loss.name).in_batch

    @property
    def needs_teacher(self) -> bool:
        return get_loss(self.loss.name).needs_teacher

    def validate(self) -> TrainConfig:
        """Raise :class:`UserInputError` for any inconsistent setting; returns ``self``."""
        for part in (self.data, self.optim, self.runtime, self.model, self.loss):
            check_field_types(part)
        spec = get_loss(self.loss.name)
        _check_choice(self.model.arch, ARCHS, "--arch")
        _check_choice(self.data.missing_scores, MISSING_SCORES, "--missing-scores")
        if self.data.group_size < 2:
            raise UserInputError(f"--group-size must be at least 2 (a positive and a negative), got "
                                 f"{self.data.group_size}")
        if spec.needs_teacher and not self.data.scores:
            raise UserInputError(f"--loss {spec.name} needs teacher scores", fix="pass --scores STORE "
                                 "(made by `rankdistill score`) or use --loss lce/infonce")
        if self.loss.pairs is not None:
            _check_choice(self.loss.pairs, MARGIN_PAIRS, "--margin-pairs")
        if self.loss.targets is not None:
            _check_choice(self.loss.targets, RANKNET_TARGETS, "--ranknet-targets")
        if self.loss.ties is not None:
            _check_choice(self.loss.ties, RANKNET_TIES, "--ranknet-ties")
        unknown = sorted(set(self.loss.options()) - set(spec.options))
        if unknown:
            raise UserInputError(f"--loss {spec.name} takes no {', '.join(unknown)} option; it takes: "
                                 f"{', '.join(spec.options) or 'none'}")
        if self.loss.temperature is not None and not self.loss.temperature > 0:
            raise UserInputError(f"--temperature must be positive, got {self.loss.temperature}")
        if self.loss.in_batch_negatives:
            if self.model.arch != "bi":
                raise UserInputError("in-batch negatives need --arch bi (a cross-encoder scores only its groups)")
            if spec.needs_teacher:
                raise UserInputError(f"in-batch negatives have no teacher scores; --loss {spec.name} needs them",
                                     fix="use --loss infonce or lce, or drop --in-batch-negatives")
        if self.model.layers is not None and self.model.layers < 1:
            raise UserInputError(f"--layers must be at least 1, got {self.model.layers}")
        o = self.optim
        if o.budget_docs < 1:
            raise UserInputError(f"--budget-docs must be positive, got {o.budget_docs}")
        rules = (("--batch-size", o.batch_size, o.batch_size >= 1, "at least 1"),
                 ("--grad-accum", o.grad_accum, o.grad_accum >= 1, "at least 1"),
                 ("--lr", o.lr, o.lr > 0, "positive"),
                 ("--head-lr", o.head_lr, o.head_lr is None or o.head_lr >= 0, "0 or more"),
                 ("--weight-decay", o.weight_decay, o.weight_decay >= 0, "0 or more"),
                 ("--warmup", o.warmup_ratio, 0 <= o.warmup_ratio < 1, "a share of the steps in [0, 1)"),
                 ("--max-grad-norm", o.max_grad_norm, o.max_grad_norm >= 0, "0 or more (0 = no clipping)"),
                 ("--save-every", self.runtime.save_every, self.runtime.save_every >= 1, "at least 1"),
                 ("--keep-checkpoints", self.runtime.keep_checkpoints, self.runtime.keep_checkpoints >= 1,
                  "at least 1"))
        for flag, value, ok, rule in rules:
            if not ok:
                raise UserInputError(f"{flag} must be {rule}, got {value!r}")
        r = self.runtime
        _check_choice(r.bf16, ("auto", "on", "off"), "--bf16")
        if r.workers is not None and r.workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {r.workers}")
        for flag, value in (("--bucket-steps", r.bucket_steps), ("--pad-multiple", r.pad_multiple)):
            if value < 0:  # 0 and 1 both mean off
                raise UserInputError(f"{flag} must be 0 or more, got {value}")
        if r.device != "auto":
            from rankdistill.teachers.runtime import resolve_device

            resolve_device(r.device)  # an unknown name, or CUDA where there is none: one line, before any work
        return self

    # -- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from ``{"data": {...}, "model": {...}, "loss": {...}, "optim": {...}, "runtime": {...}}``;
        unknown sections or keys raise naming them."""
        sections = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig,
                    "runtime": RuntimeConfig}
        extra = sorted(set(d) - set(sections))
        if extra:
            raise UserInputError(f"unknown training config section(s) {', '.join(extra)}; valid: "
                                 f"{', '.join(sections)}")
        built = {}
        for name, kind in sections.items():
            values = dict(d.get(name) or {})
            known = {f.name for f in fields(kind)}
            bad = sorted(set(values) - known)
            if bad:
                raise UserInputError(f"unknown key(s) {', '.join(bad)} in [{name}]; valid: {', '.join(sorted(known))}")
            try:
                built[name] = kind(**values)
            except TypeError as e:
                raise UserInputError(f"[{name}]: {e}") from None
        return cls(**built)

    def fingerprint(self) -> str:
        """Hash of every setting that changes the trained weights (runtime-only fields excluded)."""
        d = self.to_dict()
        d["runtime"] = {k: v for k, v in d["runtime"].items() if k not in _RUNTIME_ONLY}
        for (section, key), before in _ADDED_LATER.items():
            if d[section].get(key) == before:
                del d[section][key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: dict) -> list[str]:
        """Names (``section.key``) of result-changing settings that differ from a saved config dict."""
        mine = self.to_dict()
        out = []
        for section, values in mine.items():
            for key, value in values.items():
                if section == "runtime" and key in _RUNTIME_ONLY:
                    continue
                if (other.get(section) or {}).get(key, _ADDED_LATER.get((section, key), object())) != value:
                    out.append(f"{section}.{key}")
        return out

    def with_output(self, output: str) -> TrainConfig:
        return replace(self, runtime=replace(self.runtime, output=output))


__all__ = ["ARCHS", "LOSSES", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "RuntimeConfig",
           "TrainConfig"]
