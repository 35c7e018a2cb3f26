"""Inference for augmentation studies: does an arm beat its matched reference on new
patients, for a new training run? (see docs/statistics.md)"""

from leukaug.inference.bootstrap import subject_bootstrap_ci
from leukaug.inference.compare import Comparison, compare_arm
from leukaug.inference.metrics import DEFAULT_METRIC, PRIMARY_METRICS, MetricDef, get_metric
from leukaug.inference.verdicts import VERDICT_COLUMNS, decide_verdicts

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
