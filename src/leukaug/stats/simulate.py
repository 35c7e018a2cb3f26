"""A generative model of a study's test predictions, to prove the verdict rule by simulation.

Image i of test subject k, scored by arm a trained with seed s, has the logit

    sign * (separation + effect_a + run_s + run_as + hetero_ak) + subject_k + cell_ki + noise_aski

with sign = +1 for ALL and -1 for HEM and independent normal terms:

- run_s (`seed_sd`): a training-run effect shared by every arm of seed s (same split, same
  data order), which pairing by seed cancels;
- run_as (`seed_arm_sd`): the arm's own training-run luck (initialisation, augmentation draws);
  the last arm's is `unstable_arm_factor` times larger (a null arm less stable than the rest),
  the reference's (arm 0) `unstable_reference_factor` times;
- hetero_ak (`heterogeneity_sd`): subject-by-augmentation heterogeneity: arm a helps some
  patients and hurts others; every arm, the reference included, draws its own, so with
  effect_a = 0 all arms are exchangeable and none is better on new patients;
- subject_k (`subject_sd`): how hard patient k is (stain, preparation), shared by all arms;
- cell_ki (`cell_sd`): how hard the cell is, shared by all arms;
- noise_aski (`run_cell_sd`): cell-level noise of one trained model.

C-NMC subjects are single-class: each test subject is ALL or HEM (half and half).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from leukaug.stats.classical import delong_test, holm, mcnemar_exact
from leukaug.stats.compare import compare_arm
from leukaug.stats.maxt import HOLM, MAXT
from leukaug.stats.metrics import predicted_all
from leukaug.stats.moderation import MODERATED
from leukaug.stats.pooling import SEED_VARIANCES
from leukaug.stats.verdicts import decide_verdicts

# Verdict rules compared in simulation: name -> (seed-variance rule, multiplicity). The
# pooled rules keep their names with Holm (the rules of the previous round).
VERDICT_RULES: dict[str, tuple[str, str]] = {
    MODERATED: (MODERATED, MAXT),
    f"{MODERATED}_holm": (MODERATED, HOLM),
    "pooled_net_maxt": ("pooled_net", MAXT),
    **{rule: (rule, HOLM) for rule in SEED_VARIANCES},
}
RULE_IN_USE = MODERATED


@dataclass(frozen=True)
class SimulationModel:
    """Parameters of the generative model (logit scale); see the module docstring."""

    n_subjects: int = 20
    min_images: int = 15
    max_images: int = 45
    separation: float = 1.5
    subject_sd: float = 0.8
    heterogeneity_sd: float = 0.0
    seed_sd: float = 0.2
    seed_arm_sd: float = 0.15
    cell_sd: float = 1.0
    run_cell_sd: float = 0.5
    unstable_arm_factor: float = 1.0
    unstable_reference_factor: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def simulate_logits(
    model: SimulationModel, effects: np.ndarray, n_seeds: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (arms x seeds x images), labels and subject index per image, one test set."""
    images = rng.integers(model.min_images, model.max_images + 1, model.n_subjects)
    subject = np.repeat(np.arange(model.n_subjects), images)
    subject_label = np.arange(model.n_subjects) % 2  # alternate ALL / HEM subjects
    y = subject_label[subject]
    sign = 2.0 * y - 1.0
    n_arms, n_images = len(effects), len(y)
    run = rng.normal(0, model.seed_sd, (1, n_seeds, 1))
    run_arm = rng.normal(0, model.seed_arm_sd, (n_arms, n_seeds, 1))
    run_arm[-1] *= model.unstable_arm_factor
    run_arm[0] *= model.unstable_reference_factor
    hetero = rng.normal(0, model.heterogeneity_sd, (n_arms, 1, model.n_subjects))[:, :, subject]
    shift = rng.normal(0, model.subject_sd, model.n_subjects)[subject]
    cell = rng.normal(0, model.cell_sd, n_images)
    noise = rng.normal(0, model.run_cell_sd, (n_arms, n_seeds, n_images))
    strength = model.separation + np.asarray(effects)[:, None, None] + run + run_arm + hetero
    return sign * strength + shift + cell + noise, y, subject


def simulate_study(
    model: SimulationModel, effects: np.ndarray, n_seeds: int, rng: np.random.Generator
) -> list[dict[int, pd.DataFrame]]:
    """Per arm (reference first when effects[0] == 0 by convention): seed -> test predictions."""
    logits, y, subject = simulate_logits(model, effects, n_seeds, rng)
    prob = 1.0 / (1.0 + np.exp(-logits))
    image_id = np.array([f"img{i:05d}" for i in range(len(y))])
    subject_name = np.array([f"s{k:03d}" for k in range(model.n_subjects)])[subject]
    return [
        {
            s: pd.DataFrame(
                {"image_id": image_id, "subject": subject_name, "label": y, "prob": prob[a, s]}
            )
            for s in range(n_seeds)
        }
        for a in range(len(effects))
    ]


@dataclass(frozen=True)
class FamilyOutcome:
    """Verdicts of one simulated family: per seed-variance rule, and the old image-level rule."""

    rule_verdicts: dict[str, np.ndarray]  # rule -> per arm: "helps" / "hurts" / "no detectable..."
    old_rejected: np.ndarray  # per arm: old rule's Holm-adjusted image-level p <= alpha

    @property
    def verdicts(self) -> np.ndarray:
        """The verdicts of the rule in use (moderated row variances, step-down max-t)."""
        return self.rule_verdicts[RULE_IN_USE]


def old_rule_rejections(
    study: list[dict[int, pd.DataFrame]], metric: str, alpha: float
) -> np.ndarray:
    """The rule this engine replaces: seed 0 only, image-level DeLong (AUC) or McNemar
    (threshold metrics) of each arm against the reference, Holm over the arms."""
    reference = study[0][0]
    y, ref_prob = reference["label"].to_numpy(), reference["prob"].to_numpy()
    p_values = []
    for arm in study[1:]:
        prob = arm[0]["prob"].to_numpy()
        if metric == "auc":
            p_values.append(delong_test(y, prob, ref_prob).p_value)
        else:
            correct = predicted_all(prob) == (y == 1)
            p_values.append(mcnemar_exact(correct, predicted_all(ref_prob) == (y == 1)).p_value)
    return holm(p_values) <= alpha


def run_family(
    model: SimulationModel,
    effects: np.ndarray,
    n_seeds: int,
    rng: np.random.Generator,
    metric: str = "auc",
    alpha: float = 0.05,
    *,
    with_old_rule: bool = True,
    rules: tuple[str, ...] = tuple(VERDICT_RULES),
) -> FamilyOutcome:
    """Simulate one study (effects[0] is the reference) and decide it with the verdicts.csv path,
    once per rule of `rules` (names of `VERDICT_RULES`; "own" is the unpooled t on S - 1 df)."""
    study = simulate_study(model, effects, n_seeds, rng)
    rows = [
        (f"arm{a}", "reference", compare_arm(study[a], study[0], metric, alpha=alpha))
        for a in range(1, len(study))
    ]
    verdicts = {
        rule: decide_verdicts(
            rows,
            metric,
            alpha,
            seed_variance=VERDICT_RULES[rule][0],
            multiplicity=VERDICT_RULES[rule][1],
            detectable=False,
        )["verdict"].to_numpy()
        for rule in rules
    }
    old = old_rule_rejections(study, metric, alpha) if with_old_rule else np.zeros(len(rows), bool)
    return FamilyOutcome(verdicts, old)
