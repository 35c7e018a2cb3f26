"""Issue 18 item 3: the answer box says when a verdict and its AUC or log-loss effect point
different ways, and names the threshold of a thresholded metric."""

from __future__ import annotations

import pandas as pd

from leukaug.report.verdict_text import disagreement, headline, rule_sentence, verdict_table
from leukaug.stats.pairs import ReferencePlan


def _row(verdict: str, effect: float, auc: float, log_loss: float, **extra: object) -> dict:
    return {
        "arm": "noise",
        "reference": "none",
        "metric": "balanced_accuracy",
        "effect": effect,
        "ci_low": effect - 0.05,
        "ci_high": effect + 0.05,
        "p_value": 0.001,
        "p_adjusted": 0.003,
        "verdict": verdict,
        "n_seeds": 4,
        "n_subjects": 80,
        "method": "m",
        "ci_level": 0.99,
        "mde": 0.1,
        "multiplicity": "maxt",
        "threshold": "validation",
        "auc_effect": auc,
        "auc_ci_low": auc - 0.02,
        "auc_ci_high": auc + 0.02,
        "log_loss_effect": log_loss,
        "log_loss_ci_low": log_loss - 0.01,
        "log_loss_ci_high": log_loss + 0.01,
        **extra,
    }


def test_hurts_with_a_better_auc_is_a_calibration_change() -> None:
    row = pd.Series(_row("hurts", -0.17, 0.057, 0.2))
    sentence = disagreement(row, "balanced_accuracy")
    assert sentence is not None and "changes calibration, not discrimination" in sentence
    assert (
        "+0.057" in sentence and "balanced accuracy (each run's validation threshold)" in sentence
    )
    table = pd.DataFrame([_row("hurts", -0.17, 0.057, 0.2)])
    lines = headline(
        table, ReferencePlan(baseline="none", pairs=[], references=["none"]), "balanced_accuracy"
    )
    assert any("changes calibration, not discrimination" in line for line in lines)
    assert any("max-t-adjusted p" in line for line in lines)
    rendered = verdict_table(table, "balanced_accuracy")
    assert rendered is not None and any("calibration" in note for note in rendered.notes)
    assert "max-t-adjusted CI" in rendered.header[3]


def test_agreeing_or_undecided_rows_say_nothing_more() -> None:
    assert disagreement(pd.Series(_row("hurts", -0.1, -0.05, 0.1)), "balanced_accuracy") is None
    undecided = pd.Series(_row("no detectable difference", 0.01, -0.05, 0.1))
    assert disagreement(undecided, "balanced_accuracy") is None
    helps = pd.Series(_row("helps", 0.1, 0.03, 0.08))  # better ranking, worse log loss
    sentence = disagreement(helps, "balanced_accuracy")
    assert sentence is not None and "less trustworthy" in sentence and "+0.080" in sentence
    worse_auc = pd.Series(_row("helps", 0.1, -0.03, -0.01))
    assert "ranks ALL cells above HEM cells worse" in disagreement(worse_auc, "balanced_accuracy")


def test_a_fixed_threshold_and_holm_are_named() -> None:
    table = pd.DataFrame([_row("hurts", -0.1, -0.05, 0.1, threshold=0.5, multiplicity="holm")])
    sentence = rule_sentence(table, "balanced_accuracy")
    assert "balanced accuracy (threshold 0.5)" in sentence
    assert "Holm's correction applies to exactly these p-values" in sentence


def test_the_rule_names_one_method_once_and_points_to_the_table_for_several() -> None:
    """The demo's rule sentence listed two long method strings joined by a comma and went on
    after a semicolon with a capital ("(verdicts.csv); The step-down ...")."""
    one = pd.DataFrame([_row("hurts", -0.1, -0.05, 0.1, method="seed-paired t (df 12)")] * 2)
    sentence = rule_sentence(one, "auc")
    assert "(seed-paired t (df 12))" in sentence and "; The" not in sentence
    two = pd.DataFrame(
        [_row("hurts", -0.1, -0.05, 0.1, method=f"seed-paired t (df {df})") for df in (12, 3)]
    )
    sentence = rule_sentence(two, "auc")
    assert "df 12" not in sentence and "each comparison's method is in the table" in sentence
