"""Training students under a fixed budget of documents: configs, data, the engine, checkpoints, DDP.

>>> from rankdistill.training import TrainConfig, DataConfig, OptimConfig, RuntimeConfig, train   # doctest: +SKIP
>>> cfg = TrainConfig(data=DataConfig("scifact", "groups.jsonl", scores="scores.db"),
...                   optim=OptimConfig(budget_docs=100_000), runtime=RuntimeConfig("out/"))      # doctest: +SKIP
>>> result = train(cfg)                                                                          # doctest: +SKIP
"""

from rankdistill.training.budget import Budget
from rankdistill.training.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
)
from rankdistill.training.engine import TrainingDiverged, TrainResult, build_student, in_batch_scores, train

__all__ = [
    "Budget",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "build_student",
    "in_batch_scores",
    "train",
]
