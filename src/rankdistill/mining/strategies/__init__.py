"""The built-in strategies; importing this package registers them in :data:`rankdistill.mining.base.STRATEGIES`."""

from rankdistill.mining.strategies.bm25 import BM25Strategy
from rankdistill.mining.strategies.dense import DenseStrategy
from rankdistill.mining.strategies.ensemble import EnsembleStrategy
from rankdistill.mining.strategies.random import RandomStrategy
from rankdistill.mining.strategies.run import RunStrategy
from rankdistill.mining.strategies.teacher import TeacherStrategy

__all__ = ["BM25Strategy", "DenseStrategy", "EnsembleStrategy", "RandomStrategy", "RunStrategy", "TeacherStrategy"]
