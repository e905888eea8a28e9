"""Evaluation of runs with ``ir_measures``: means over judged queries and per-query values."""

from rankdistill.evaluation.measures import (
    EvaluationResult,
    default_metrics,
    evaluate_run,
    parse_metrics,
    read_per_query,
    write_per_query,
)

__all__ = ["EvaluationResult", "default_metrics", "evaluate_run", "parse_metrics", "read_per_query",
           "write_per_query"]
