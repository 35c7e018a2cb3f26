"""Inference for augmentation studies: does an arm beat its matched reference on new
patients, for a new training run? (see docs/statistics.md)"""

from leukaug.stats.bootstrap import subject_bootstrap_ci
from leukaug.stats.compare import Comparison, compare_arm
from leukaug.stats.primary_metrics import DEFAULT_METRIC, PRIMARY_METRICS, MetricDef, get_metric
from leukaug.stats.verdicts import VERDICT_COLUMNS, decide_verdicts

__all__ = [
    "DEFAULT_METRIC",
    "PRIMARY_METRICS",
    "VERDICT_COLUMNS",
    "Comparison",
    "MetricDef",
    "compare_arm",
    "decide_verdicts",
    "get_metric",
    "subject_bootstrap_ci",
]
