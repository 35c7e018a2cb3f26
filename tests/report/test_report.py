"""build_report on fabricated study folders: outputs, known effects, robustness, self-contained HTML."""

from __future__ import annotations

import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leukaug.core.errors import ConfigError
from leukaug.report import build_report
from leukaug.stats.pairs import plan_references
from leukaug.stats.study_results import load_study_results
from report_fixtures import make_study

RESAMPLES = 200
FIGURES = [
    "sample_cells",
    "augmented_cells",
    "training_curves",
    "confusion_matrices",
    "accuracy_ci",
    "roc_curves",
    "accuracy_vs_threshold",
    "reliability",
    "forest",
    "subject_accuracy",
]
VERDICT_COLUMNS = [  # the contract for verdicts.csv, in this order
    "arm",
    "reference",
    "metric",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "verdict",
    "n_seeds",
    "n_subjects",
    "method",
]
TABLES = ["verdicts", "table1", "table2", "table3", "table4", "table6", "failed", "dataset"]


class PageParser(HTMLParser):
    """Collects ids, tags and URL-bearing attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.img_src: list[str] = []
        self.scripts_with_src = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for name in ("src", "href", "action", "data", "poster"):
            if values.get(name):
                self.urls.append(values[name])
        if tag == "img":
            self.img_src.append(values.get("src") or "")
        if tag == "script" and values.get("src"):
            self.scripts_with_src += 1


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    study = make_study(
        tmp_path_factory.mktemp("study"),
        {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35, "always_hem": "always_hem"},
    )
    return study, build_report(study, n_resamples=RESAMPLES)


def test_writes_every_output(built: tuple[Path, dict[str, Path]]) -> None:
    study, paths = built
    for key in ("report", "summary", "metrics", "comparisons", "verdicts", "seed_metrics"):
        assert paths[key].is_file(), key
    for stem in FIGURES[2:]:
        assert (study / "figures" / f"{stem}.png").is_file() and (
            study / "figures" / f"{stem}.svg"
        ).is_file()
    assert not list(study.rglob("*.tmp")), "atomic writes left temporary files"


def test_html_is_self_contained_and_complete(built: tuple[Path, dict[str, Path]]) -> None:
    _study, paths = built
    page = parse(paths["report"])
    text = paths["report"].read_text(encoding="utf-8")
    assert "link" not in page.tags and page.scripts_with_src == 0
    assert all(not url.lower().startswith(("http:", "https:", "//")) for url in page.urls)
    assert "http://" not in text and "https://" not in text
    assert all(src.startswith("data:image/png;base64,") for src in page.img_src)
    assert len(page.img_src) == len(FIGURES) - 2  # sample/augmented cells are not rendered here
    for key in FIGURES:
        assert f"fig-{key}" in page.ids, key
    for key in TABLES:
        assert key in page.ids, key
    assert "Figure 1. Sample cells: not available" in text


def test_answer_comes_first_and_finds_the_known_effect(built: tuple[Path, dict[str, Path]]) -> None:
    _, paths = built
    text = paths["report"].read_text(encoding="utf-8")
    assert (
        text.index('id="synthetic-warning"')
        < text.index('id="answer"')
        < text.index('id="tables"')
        < text.index('id="figures"')
    )
    assert (
        text.index('id="figures"')
        < text.index('id="dataset"')
        < text.index('id="configuration"')
        < text.index('id="versions"')
    )
    assert "flip_rotate helps compared with baseline" in text
    assert "noise: no detectable difference from baseline" in text
    assert "would have detected a difference of ±" in text
    summary = paths["summary"].read_text(encoding="utf-8")
    assert "Described, not tested: always_hem (no arm with augmentation 'none' differs" in summary
    assert "SYNTHETIC DATA" in summary and "flip_rotate helps compared with baseline" in summary
    # one seed per arm: the report says what that means and what to do
    assert "conditional on one training run per arm" in summary and "at least 3 seeds" in summary


def test_verdicts_csv_decides_and_agrees_with_every_number(
    built: tuple[Path, dict[str, Path]],
) -> None:
    _, paths = built
    verdicts = pd.read_csv(paths["verdicts"])
    assert list(verdicts.columns[: len(VERDICT_COLUMNS)]) == VERDICT_COLUMNS
    assert set(verdicts["arm"]) == {"flip_rotate", "noise"}  # always_hem: another model
    assert (verdicts["reference"] == "baseline").all() and (verdicts["metric"] == "auc").all()
    by_arm = verdicts.set_index("arm")["verdict"]
    assert by_arm["flip_rotate"] == "helps" and by_arm["noise"] == "no detectable difference"
    for _, row in verdicts.iterrows():  # the verdict is what its own adjusted p and sign say
        decided = row["p_adjusted"] <= 0.05
        assert (row["verdict"] != "no detectable difference") == decided
        if decided:
            assert (row["verdict"] == "helps") == (row["effect"] > 0)
            assert row["ci_low"] > 0 or row["ci_high"] < 0
    summary = paths["summary"].read_text(encoding="utf-8")
    table = summary[summary.index("Primary analysis") :]
    for _, row in verdicts.iterrows():  # the page prints verdicts.csv's own p beside each verdict
        line = next(x for x in table.splitlines() if x.startswith(f"| {row['arm']} |"))
        assert row["verdict"] in line
        assert f"{row['p_adjusted']:.4f}" in line or (
            row["p_adjusted"] < 1e-4 and "<0.0001" in line
        )
    # issue 18: the family is adjusted by the step-down max-t (Holm stays an option)
    assert "The step-down max-t correction applies to exactly these p-values" in summary


def test_metrics_csv_has_one_row_per_arm_and_split(built: tuple[Path, dict[str, Path]]) -> None:
    _, paths = built
    metrics = pd.read_csv(paths["metrics"])
    assert len(metrics) == 4 * 3 and not metrics.duplicated(["arm_id", "split"]).any()
    expected = {
        "loss",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "precision",
        "recall",
        "specificity",
        "f1",
        "weighted_f1",
        "balanced_accuracy",
        "mcc",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "brier",
        "ece",
        "tn",
        "fp",
        "fn",
        "tp",
        "operating_threshold",
        "op_accuracy",
        "subject_diagnosis_accuracy",
    }
    assert expected <= set(metrics.columns)
    assert metrics.loc[metrics["name"] == "baseline", "split"].tolist() == ["train", "val", "test"]
    assert metrics.iloc[0]["name"] == "baseline"


def test_comparisons_csv(built: tuple[Path, dict[str, Path]]) -> None:
    _, paths = built
    comparisons = pd.read_csv(paths["comparisons"])
    for column in (
        "arm",
        "reference",
        "test",
        "metric",
        "statistic",
        "p_value",
        "p_adjusted",
        "effect",
        "ci_low",
        "ci_high",
    ):
        assert column in comparisons.columns
    assert set(comparisons["arm"]) == {"flip_rotate", "noise"}
    assert (comparisons["split"] == "test").all()
    assert (comparisons["p_adjusted"] >= comparisons["p_value"] - 1e-12).all()
    flip = comparisons[
        (comparisons["arm"] == "flip_rotate") & (comparisons["test"] == "delong")
    ].iloc[0]
    assert flip["effect"] > 0 and flip["ci_low"] > 0 and flip["p_adjusted"] < 0.05


def test_degenerate_arm_is_shown_with_a_dash_and_a_note(
    built: tuple[Path, dict[str, Path]],
) -> None:
    _, paths = built
    text = paths["report"].read_text(encoding="utf-8")
    assert "predicts HEM for every test image: precision is undefined" in text
    assert "–*" in text
    metrics = pd.read_csv(paths["metrics"])
    assert metrics.loc[metrics["name"] == "always_hem", "precision"].isna().all()


def test_failed_arm_is_listed_escaped(built: tuple[Path, dict[str, Path]]) -> None:
    _, paths = built
    text = paths["report"].read_text(encoding="utf-8")
    assert "blur-s0" in text and "&lt;lr too high&gt;" in text and "<lr too high>" not in text


def test_row_order_of_predictions_does_not_matter(
    built: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    study, paths = built
    shuffled = tmp_path / "shuffled"
    shutil.copytree(
        study, shuffled, ignore=shutil.ignore_patterns("figures", "*.csv", "*.html", "*.md")
    )
    for k, folder in enumerate(sorted((shuffled / "arms").iterdir())):
        original = study / "arms" / folder.name / "predictions.csv"
        if original.is_file():
            pd.read_csv(original).sample(frac=1.0, random_state=k).to_csv(
                folder / "predictions.csv", index=False
            )
    again = build_report(shuffled, n_resamples=RESAMPLES)
    pd.testing.assert_frame_equal(pd.read_csv(again["metrics"]), pd.read_csv(paths["metrics"]))
    pd.testing.assert_frame_equal(
        pd.read_csv(again["comparisons"]), pd.read_csv(paths["comparisons"])
    )


def test_seeds_are_aggregated_and_joined_by_image_id(tmp_path: Path) -> None:
    study = make_study(
        tmp_path / "s",
        {"baseline": 0.3, "flip_rotate": 1.5},
        seeds=(0, 1),
        failed=(),
        n_subjects={"val": 4, "test": 8},
        images_per_subject=8,
    )
    paths = build_report(study, n_resamples=RESAMPLES)
    summary = pd.read_csv(paths["seed_metrics"])
    test = summary[(summary["split"] == "test") & (summary["name"] == "flip_rotate")].iloc[0]
    metrics = pd.read_csv(paths["metrics"])
    per_seed = metrics[(metrics["split"] == "test") & (metrics["name"] == "flip_rotate")][
        "accuracy"
    ]
    assert test["n_seeds"] == 2
    assert test["accuracy_mean"] == pytest.approx(per_seed.mean()) and test[
        "accuracy_sd"
    ] == pytest.approx(per_seed.std(ddof=1))
    comparisons = pd.read_csv(paths["comparisons"])
    assert {"seed_mean", "arm"} == set(comparisons["level"])
    seed_mean = comparisons[
        (comparisons["level"] == "seed_mean") & (comparisons["test"] == "delong")
    ].iloc[0]
    # independent check of the seed-averaged AUC: average by image_id with pandas, then sklearn
    from sklearn.metrics import roc_auc_score

    frames = [pd.read_csv(study / "arms" / f"flip_rotate-s{s}" / "predictions.csv") for s in (0, 1)]
    base = [pd.read_csv(study / "arms" / f"baseline-s{s}" / "predictions.csv") for s in (0, 1)]

    def averaged(parts: list[pd.DataFrame]) -> pd.Series:
        tests = [p[p["split"] == "test"].set_index("image_id")["prob"] for p in parts]
        return (tests[0] + tests[1]) / 2

    a, b = averaged(frames), averaged(base).loc[averaged(frames).index]
    labels = frames[0][frames[0]["split"] == "test"].set_index("image_id")["label"].loc[a.index]
    assert seed_mean["effect"] == pytest.approx(
        roc_auc_score(labels, a) - roc_auc_score(labels, b), abs=1e-12
    )
    assert "Table 5." in paths["report"].read_text(encoding="utf-8")


def test_names_escaped_study_figures_embedded_no_synthetic_banner(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    evil = "<script>alert(1)</script>"
    study = make_study(
        tmp_path / "s",
        {"baseline": 0.3, evil: 1.0},
        failed=(),
        synthetic=False,
        n_subjects={"val": 4, "test": 6},
        images_per_subject=6,
    )
    (study / "figures").mkdir()
    for stem in ("sample_cells", "augmented_cells"):
        figure, ax = plt.subplots(figsize=(2, 1))
        ax.imshow(np.random.default_rng(0).random((8, 16)))
        figure.savefig(study / "figures" / f"{stem}.png")
        plt.close(figure)
    paths = build_report(study, n_resamples=50)
    text = paths["report"].read_text(encoding="utf-8")
    page = parse(paths["report"])
    assert evil not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "script" not in page.tags
    assert 'id="synthetic-warning"' not in text
    assert len(page.img_src) == len(FIGURES)
    assert "not available" not in text


def test_reference_override_wald_and_an_arm_without_test(tmp_path: Path) -> None:
    study = make_study(
        tmp_path / "s",
        {"flip_rotate": 1.0, "baseline": 0.3},
        failed=(),
        with_toml=False,
        n_subjects={"train": 4, "test": 6},
        images_per_subject=6,
    )
    # no study.toml: the unaugmented arm is the reference
    plan = plan_references(load_study_results(study))
    assert plan.references == ["baseline"] and [p.arm for p in plan.pairs] == ["flip_rotate"]
    train_only = study / "arms" / "train_only-s0"
    shutil.copytree(study / "arms" / "baseline-s0", train_only)
    info = json.loads((train_only / "arm.json").read_text())
    info["spec"]["model"] = "resnet18"
    (train_only / "arm.json").write_text(
        json.dumps({**info, "arm_id": "train_only-s0", "name": "train_only"})
    )
    predictions = pd.read_csv(train_only / "predictions.csv")
    predictions[predictions["split"] == "train"].to_csv(train_only / "predictions.csv", index=False)

    # an arm name as the baseline is read as its augmentation: baseline is now the tested arm
    paths = build_report(study, baseline="flip_rotate", n_resamples=50, ci_method="wald")
    assert set(pd.read_csv(paths["comparisons"])["arm"]) == {"baseline"}
    assert pd.read_csv(paths["verdicts"])["reference"].tolist() == ["flip_rotate"]
    text = paths["report"].read_text(encoding="utf-8")
    assert "No test predictions, so not compared: train_only-s0." in text
    assert "is an arm name (an older study file)" in text
    assert "Table 3." in text  # no val split: dashes, no crash
    metrics = pd.read_csv(paths["metrics"])
    row = metrics[(metrics["name"] == "baseline") & (metrics["split"] == "test")].iloc[0]
    half = 1.959963984540054 * np.sqrt(row["accuracy"] * (1 - row["accuracy"]) / row["n"])
    assert row["accuracy_ci_high"] == pytest.approx(min(1.0, row["accuracy"] + half))
    with pytest.raises(ConfigError, match="Unknown augmentation or arm 'flp'"):
        build_report(study, baseline="flp")
    with pytest.raises(ConfigError, match="Unknown CI method"):
        build_report(study, ci_method="exact")


def test_cli_report_prints_location_and_headline(tmp_path: Path) -> None:
    from leukaug.cli import app

    study = make_study(
        tmp_path / "s",
        {"baseline": 0.3, "flip_rotate": 1.5},
        failed=(),
        n_subjects={"val": 4, "test": 9},
        images_per_subject=8,
    )
    result = CliRunner().invoke(app, ["report", str(study), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert str(study / "report.html") in result.output
    assert "flip_rotate helps compared with baseline" in result.output
    assert "SYNTHETIC DATA" in result.output
    assert json.loads((study / "dataset.json").read_text())["synthetic"] is True


def test_a_failing_figure_and_an_arms_optional_failures_are_noted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: figures are extras; a figure that fails to render is listed as not
    available, and an arm's recorded optional failures (Grad-CAM, tracking) become a note."""
    from leukaug.report import figure_specs

    study = make_study(tmp_path / "s", {"baseline": 0.3, "flip_rotate": 1.0}, failed=())
    arm_json = study / "arms" / "flip_rotate-s0" / "arm.json"
    info = json.loads(arm_json.read_text())
    failure = {"step": "cams", "error": "ValueError: cannot reshape", "at": "2026-01-01"}
    arm_json.write_text(json.dumps(info | {"optional_failures": [failure]}))

    def broken(data):
        raise MemoryError("figure too large")

    first, *rest = figure_specs.FIGURES
    monkeypatch.setattr(figure_specs, "FIGURES", [dataclasses.replace(first, render=broken), *rest])
    paths = build_report(study, n_resamples=RESAMPLES)
    html = paths["report"].read_text()
    assert "rendering failed: MemoryError: figure too large" in html
    assert "Arm flip_rotate-s0: optional step(s) failed (cams: ValueError: cannot reshape)" in html
