"""The primary comparison of an arm with its matched reference, over seeds and test subjects.

Per seed s the paired difference Delta_s = metric(arm_s) - metric(reference_s) is computed on
the same test images (joined by image_id). The effect is the mean over seeds, and its
variance adds the two ways a new study would differ:

- training runs: the between-seed variance of Delta_s over S (Nadeau & Bengio 2003);
- test patients: the subject-level variance of the seed-averaged difference, from each
  image's influence on the metric summed per subject, with subjects stratified by their
  (majority) label (for AUC: Obuchowski 1997, the clustered DeLong variance).

On its own a comparison uses a t reference with S - 1 degrees of freedom (Hsu's conservative
choice: the between-seed variance rests on S seeds; a Welch-Satterthwaite df estimated from
the same few seeds was anti-conservative in benchmarks/calibration.py). `decide_verdicts`
then borrows strength for the between-seed variance across the family's arms
(`leukaug.stats.pooling`), which is what gives 3 seeds power. With one seed only the
subject-level part exists (df: subjects minus strata): the result is conditional on that
one training run, and the Comparison says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit

from leukaug.core.errors import DataError
from leukaug.stats.metrics import DEFAULT_THRESHOLD
from leukaug.stats.primary_metrics import DEFAULT_METRIC, MetricDef, get_metric

REQUIRED_COLUMNS = ("image_id", "subject", "label", "prob")
METHOD_SEEDS = "seed-paired t, seeds + subjects"
METHOD_ONE_SEED = "subject-clustered t, one seed"
ONE_SEED_NOTE = (
    "conditional on one training run (1 seed): says nothing about a new training run; "
    "run >= 3 seeds"
)


@dataclass(frozen=True)
class Comparison:
    """Arm minus reference on one metric, with the test that decides its verdict."""

    metric: str
    higher_is_better: bool
    effect: float
    ci_low: float
    ci_high: float
    ci_half_width: float
    p_value: float
    se: float
    df: float
    alpha: float
    var_seeds: float
    var_subjects: float
    arm_value: float
    reference_value: float
    seed_effects: tuple[float, ...]
    seeds: tuple[int, ...]
    n_seeds: int
    n_subjects: int
    n_images: int
    method: str
    note: str
    df_subjects: float = 0.0  # subjects minus class strata: the subject variance's df
    # Seed-specific test-sampling noise / S, counted in both var_seeds and var_subjects:
    # (mean of the seeds' own subject variances - var_subjects) / (S - 1), at least 0.
    var_overlap: float = 0.0
    # The (arm x seed) table's rows, for the family's per-row variances (stats.moderation):
    # the arm's metric per seed (order of `seeds`), the reference's seeds (a superset: the
    # reference may have more) and its metric per seed.
    arm_seed_values: tuple[float, ...] = ()
    reference_seeds: tuple[int, ...] = ()
    reference_seed_values: tuple[float, ...] = ()
    # Each test subject's contribution to the effect (influence summed per subject), with its
    # class stratum: the covariance of two comparisons over patients (stats.maxt).
    subject_ids: tuple[str, ...] = ()
    subject_strata: tuple[int, ...] = ()
    subject_effects: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _SeedPair:
    effect: float
    arm_value: float
    reference_value: float
    subjects: np.ndarray  # one subject per image
    labels: np.ndarray
    influence: np.ndarray  # d(arm - reference) / d weight, per image
    arm_influence: np.ndarray
    reference_influence: np.ndarray


@dataclass(frozen=True)
class _Predictions:
    """One seed's test predictions as arrays sorted by image_id."""

    image_id: np.ndarray
    subject: np.ndarray
    label: np.ndarray
    prob: np.ndarray
    threshold: float  # the run's operating threshold for thresholded metrics (0.5 unless given)


def _threshold(frame: pd.DataFrame, side: str, seed: int) -> float:
    """The run's operating threshold: the optional `threshold` column, one value per run."""
    if "threshold" not in frame.columns:
        return DEFAULT_THRESHOLD
    values = pd.to_numeric(frame["threshold"], errors="coerce").unique()
    if len(values) != 1 or not 0 < values[0] <= 1:
        raise DataError(
            f"{side} seed {seed}: `threshold` must be one operating threshold in (0, 1] for the "
            f"whole run, got {sorted(map(str, values))[:3]}."
        )
    return float(values[0])


def _predictions(frame: pd.DataFrame, side: str, seed: int) -> _Predictions:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{side} seed {seed}: expected a predictions DataFrame, got {type(frame).__name__}."
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{side} seed {seed}: predictions lack column(s) {missing}; "
            f"expected {list(REQUIRED_COLUMNS)}, got {list(frame.columns)}."
        )
    if frame.empty:
        raise DataError(f"{side} seed {seed}: no test predictions.")
    image_id = frame["image_id"].to_numpy().astype(str)  # numpy arrays: fast in simulations
    order = None if np.all(image_id[1:] >= image_id[:-1]) else np.argsort(image_id, kind="stable")
    if order is not None:
        image_id = image_id[order]
    repeated = np.flatnonzero(image_id[1:] == image_id[:-1])
    if len(repeated):
        raise DataError(
            f"{side} seed {seed}: image_id {image_id[repeated[0]]!r} appears twice; "
            "pass the test split only."
        )
    prob = frame["prob"].to_numpy()
    if prob.dtype.kind not in "fiu":
        prob = pd.to_numeric(frame["prob"], errors="coerce").to_numpy()
    prob = prob.astype(float)
    if not ((prob >= 0) & (prob <= 1)).all():
        raise DataError(
            f"{side} seed {seed}: `prob` must be a probability in [0, 1], no missing values."
        )
    label = frame["label"].to_numpy()
    if not np.isin(label, (0, 1)).all():
        raise DataError(f"{side} seed {seed}: `label` must be 0 (HEM) or 1 (ALL).")
    subject = frame["subject"].to_numpy().astype(str)
    if order is not None:
        prob, label, subject = prob[order], label[order], subject[order]
    return _Predictions(image_id, subject, label.astype(int), prob, _threshold(frame, side, seed))


def _pair(
    arm: pd.DataFrame | None, reference: pd.DataFrame, seed: int, metric: MetricDef
) -> _SeedPair:
    """Join one seed's arm and reference predictions by image_id and difference them
    (arm None: a reference seed the arm lacks; it is checked and scored on its own)."""
    r = _predictions(reference, "reference", seed)
    a = r if arm is None else _predictions(arm, "arm", seed)
    if not np.array_equal(a.image_id, r.image_id):
        only_arm = np.setdiff1d(a.image_id, r.image_id)
        example, side = (
            (only_arm[0], "arm")
            if len(only_arm)
            else (
                np.setdiff1d(r.image_id, a.image_id)[0],
                "reference",
            )
        )
        raise DataError(
            f"seed {seed}: the arm and the reference were not predicted on the same test "
            f"images (e.g. {example!r} is only in the {side}); both need every test image."
        )
    for column in ("label", "subject"):
        differs = getattr(a, column) != getattr(r, column)
        if differs.any():
            raise DataError(
                f"seed {seed}: image {a.image_id[differs][0]!r} has a different {column} "
                "in the arm and the reference predictions."
            )
    arm_value, arm_influence = metric.influence(a.label, a.prob, a.threshold)
    ref_value, ref_influence = metric.influence(a.label, r.prob, r.threshold)
    return _SeedPair(
        arm_value - ref_value,
        arm_value,
        ref_value,
        a.subject,
        a.label,
        arm_influence - ref_influence,
        arm_influence,
        ref_influence,
    )


def stratified_cluster_variance(contributions: np.ndarray, strata: np.ndarray) -> tuple[float, int]:
    """Variance of a sum of independent cluster contributions sampled within strata.

    sum_h G_h / (G_h - 1) sum_{k in h} (Z_k - mean_h Z)^2; returns it with its degrees of
    freedom (clusters minus strata). A stratum of one cluster adds nothing estimable.
    """
    variance, df = 0.0, 0
    for stratum in np.unique(strata):
        z = contributions[strata == stratum]
        if len(z) > 1:
            variance += len(z) / (len(z) - 1) * float(np.sum((z - z.mean()) ** 2))
            df += len(z) - 1
    return variance, df


@dataclass(frozen=True)
class _SubjectParts:
    variance: float  # of the effect over test patients
    df: int  # subjects minus class strata
    within: float  # mean of the paired seeds' own subject-level variances
    codes: np.ndarray  # subject ids
    strata: np.ndarray  # their class stratum
    contributions: np.ndarray  # each subject's share of the effect


def _subject_variance(pairs: list[_SeedPair], extra: list[_SeedPair]) -> _SubjectParts:
    """Subject-level variance of the effect (mean arm over its seeds minus mean reference over
    its seeds, `extra` being reference seeds the arm lacks), and its parts."""
    every = pairs + extra
    subjects = np.concatenate([p.subjects for p in every])
    codes, index = np.unique(subjects, return_inverse=True)
    labels = np.concatenate([p.labels for p in every])
    share_all = np.bincount(index, weights=labels, minlength=len(codes)) / np.bincount(index)
    strata = np.round(share_all)
    n_arm, n_ref = len(pairs), len(every)
    if extra:
        influence = np.concatenate(
            [p.arm_influence / n_arm - p.reference_influence / n_ref for p in pairs]
            + [-p.reference_influence / n_ref for p in extra]
        )
    else:
        influence = np.concatenate([p.influence / n_arm for p in pairs])
    contributions = np.bincount(index, weights=influence, minlength=len(codes))
    variance, df = stratified_cluster_variance(contributions, strata)
    paired_index = index[: sum(len(p.labels) for p in pairs)]
    paired_influence = np.concatenate([p.influence for p in pairs])
    seed_of = np.repeat(np.arange(n_arm), [len(p.labels) for p in pairs])
    per_seed = [
        stratified_cluster_variance(
            np.bincount(paired_index[seed_of == s], paired_influence[seed_of == s], len(codes)),
            strata,
        )[0]
        for s in range(n_arm)
    ]
    return _SubjectParts(variance, df, float(np.mean(per_seed)), codes, strata, contributions)


def t_test(effect: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """Two-sided p-value and the matching (1 - alpha) CI half-width."""
    if se > 1e-12:
        p_value = float(2 * stdtr(df, -abs(effect) / se))
    else:  # no variance at all: identical predictions, or a difference with no spread
        p_value = 1.0 if abs(effect) <= 1e-12 else 0.0
    return p_value, float(stdtrit(df, 1 - alpha / 2) * se)


def compare_arm(
    arm: Mapping[int, pd.DataFrame],
    reference: Mapping[int, pd.DataFrame],
    metric: str = DEFAULT_METRIC,
    *,
    alpha: float = 0.05,
    rng_seed: int = 0,
) -> Comparison:
    """Compare an arm with its reference on new patients and a new training run.

    `arm` and `reference` map seed -> that seed's test predictions (image_id, subject,
    label, prob, and optionally `threshold`: the run's operating threshold for accuracy,
    balanced accuracy and F1, 0.5 without it); seeds are paired, images joined by image_id. An arm seed the reference
    lacks is a DataError; reference seeds the arm lacks (a study may give the reference
    more seeds) join the reference's mean, and the effect is the arm's mean over its seeds
    minus the reference's over all of its seeds. `rng_seed` is accepted for the report's interface; this analytic
    method draws no random numbers.
    """
    definition = get_metric(metric)
    if not 0 < alpha < 1:
        raise DataError(f"alpha must lie in (0, 1), got {alpha}.")
    only_arm = sorted(set(arm) - set(reference))
    if only_arm:
        raise DataError(
            f"seeds must be paired: seed(s) {only_arm} have no reference predictions; run "
            "the missing seeds (the reference must be trained with every seed of the arm; "
            "it may have more)."
        )
    seeds = tuple(sorted(arm))
    if not seeds:
        raise DataError("no seeds to compare: the arm has no predictions.")
    extra_seeds = tuple(sorted(set(reference) - set(arm)))
    pairs = [_pair(arm[s], reference[s], s, definition) for s in seeds]
    extra = [_pair(None, reference[s], s, definition) for s in extra_seeds]
    for seed, other in zip(extra_seeds, extra, strict=True):
        if not np.array_equal(other.subjects, pairs[0].subjects):
            raise DataError(
                f"reference seed {seed} was not predicted on the arm's test images; "
                "every seed needs the same test split."
            )
    effects = np.array([p.effect for p in pairs])
    arm_values = np.array([p.arm_value for p in pairs])
    ref_values = np.array([p.reference_value for p in pairs + extra])
    n_images = len(pairs[0].labels)
    common = dict(
        metric=metric,
        higher_is_better=definition.higher_is_better,
        alpha=alpha,
        arm_value=float(arm_values.mean()),
        reference_value=float(ref_values.mean()),
        seed_effects=tuple(float(e) for e in effects),
        seeds=seeds,
        n_seeds=len(seeds),
        n_images=n_images,
        method=METHOD_SEEDS if len(seeds) > 1 else METHOD_ONE_SEED,
        arm_seed_values=tuple(float(v) for v in arm_values),
        reference_seeds=seeds + extra_seeds,
        reference_seed_values=tuple(float(v) for v in ref_values),
    )
    parts = _subject_variance(pairs, extra)
    var_subjects, df_subjects, n_subjects = parts.variance, parts.df, len(parts.codes)
    if (
        not np.isfinite(ref_values).all()
        or not np.isfinite(effects).all()
        or not (math.isfinite(var_subjects))
    ):
        nan = math.nan
        return Comparison(
            effect=nan,
            ci_low=nan,
            ci_high=nan,
            ci_half_width=nan,
            p_value=nan,
            se=nan,
            df=nan,
            var_seeds=nan,
            var_subjects=nan,
            n_subjects=n_subjects,
            note=f"{definition.label} is undefined on these test predictions (one class only?)",
            **common,
        )
    if extra:  # unpaired part: conservative (ignores the pairing of the shared seeds)
        var_seeds = float(np.var(arm_values, ddof=1)) / len(seeds) if len(seeds) > 1 else 0.0
        var_seeds += float(np.var(ref_values, ddof=1)) / len(ref_values)
        effect = float(arm_values.mean() - ref_values.mean())
    else:
        var_seeds = float(np.var(effects, ddof=1)) / len(seeds) if len(seeds) > 1 else 0.0
        effect = float(effects.mean())
    # Hsu's conservative df: the between-seed part rests on S - 1 df. Welch-Satterthwaite df,
    # estimated from the same few seeds, rejected true nulls up to 5x too often in simulation.
    df = float(len(seeds) - 1 if len(seeds) > 1 else max(df_subjects, 1))
    se = math.sqrt(var_seeds + var_subjects)
    p_value, half_width = t_test(effect, se, df, alpha)
    return Comparison(
        effect=effect,
        ci_low=effect - half_width,
        ci_high=effect + half_width,
        ci_half_width=half_width,
        p_value=p_value,
        se=se,
        df=df,
        var_seeds=var_seeds,
        var_subjects=var_subjects,
        n_subjects=n_subjects,
        note="" if len(seeds) > 1 else ONE_SEED_NOTE,
        df_subjects=float(df_subjects),
        var_overlap=max(parts.within - var_subjects, 0.0) / (len(seeds) - 1)
        if len(seeds) > 1
        else 0.0,
        subject_ids=tuple(str(c) for c in parts.codes),
        subject_strata=tuple(int(h) for h in parts.strata),
        subject_effects=tuple(float(z) for z in parts.contributions),
        **common,
    )
