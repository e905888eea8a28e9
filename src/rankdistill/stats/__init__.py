"""Statistics for comparing rankers on per-query values: paired tests, corrections, bootstrap, TOST,
equivalence classes, aggregation over seeds and collections, random-effects meta-analysis."""

from rankdistill.stats.bootstrap import BootstrapInterval, bootstrap_mean_diff
from rankdistill.stats.claims import AddsLittle, Differences, PairedShift, adds_little, differences, paired_shift
from rankdistill.stats.compare import ComparisonConfig, ComparisonReport, SystemComparison, compare_systems
from rankdistill.stats.corrections import adjust_pvalues
from rankdistill.stats.equivalence import CAVEAT, EquivalenceClasses, equivalence_classes
from rankdistill.stats.meta import MeanInterval, MetaAnalysis, mean_interval, random_effects
from rankdistill.stats.paired import PairedTestResult, paired_t_test, wilcoxon_test
from rankdistill.stats.perquery import Alignment, SystemScores, align, load_per_query
from rankdistill.stats.study import StudyEntry, StudyReport, read_manifest, run_study
from rankdistill.stats.tost import Margin, TostResult, paired_tost, resolve_margin, tost_verdict

__all__ = [
    "CAVEAT",
    "AddsLittle",
    "Alignment",
    "BootstrapInterval",
    "ComparisonConfig",
    "ComparisonReport",
    "Differences",
    "EquivalenceClasses",
    "Margin",
    "MeanInterval",
    "MetaAnalysis",
    "PairedShift",
    "PairedTestResult",
    "StudyEntry",
    "StudyReport",
    "SystemComparison",
    "SystemScores",
    "TostResult",
    "adds_little",
    "adjust_pvalues",
    "align",
    "bootstrap_mean_diff",
    "compare_systems",
    "differences",
    "equivalence_classes",
    "load_per_query",
    "mean_interval",
    "paired_shift",
    "paired_t_test",
    "paired_tost",
    "random_effects",
    "read_manifest",
    "resolve_margin",
    "run_study",
    "tost_verdict",
    "wilcoxon_test",
]
