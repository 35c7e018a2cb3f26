"""`leukaug synth` and `leukaug data inspect`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leukaug.cli.conventions import LeukaugTyper, choice
from leukaug.data.choices import LAYOUTS, STAIN_NORMALIZATIONS

Layout = choice(LAYOUTS)
StainNormalization = choice(STAIN_NORMALIZATIONS)
MAX_SUBJECT_ROWS = 20  # more subjects than this: a summary and a histogram, unless --all

data_app = LeukaugTyper(
    help="Look at data sets: counts, image modes, contact sheets.", no_args_is_help=True
)


def synth(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the data set into (Kaggle C-NMC layout)."
    ),
    size: int = typer.Option(450, help="Image side in pixels (C-NMC: 450)."),
    subjects_per_class: int = typer.Option(
        6, help="Training subjects per class (spread over fold_0..2)."
    ),
    test_subjects_per_class: int = typer.Option(
        4, help="Test subjects per class (disjoint, wider stain variation)."
    ),
    cells_per_subject: int = typer.Option(
        20, help="Cells per HEM subject; ALL subjects get twice as many (~2:1)."
    ),
    seed: int = typer.Option(0, help="Random seed: same seed, same bytes."),
    difficulty: float = typer.Option(
        0.5, help="Overlap of the class morphologies: 0 separable, 1 no signal."
    ),
) -> None:
    """Generate the embedded SYNTHETIC C-NMC-like data set (not real cells)."""
    from rich.progress import Progress

    from leukaug.data.synth import SynthConfig, generate

    config = SynthConfig(
        size=size,
        subjects_per_class=subjects_per_class,
        test_subjects_per_class=test_subjects_per_class,
        cells_per_subject=cells_per_subject,
        seed=seed,
        difficulty=difficulty,
    )
    config.validate()
    with Progress(transient=True) as progress:
        task = progress.add_task("rendering cells", total=None)
        summary = generate(
            out,
            config,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console = Console()
    table = Table(
        title=f"Synthetic C-NMC data set in {escape(str(out))} "
        "(SYNTHETIC: says nothing about real leukaemia)"
    )
    for column in ("split", "class", "subjects", "images"):
        table.add_column(column, justify="right" if column in ("subjects", "images") else "left")
    for key, entry in summary["counts"].items():
        split, class_name = key.split("_")
        table.add_row(split, class_name.upper(), str(entry["subjects"]), str(entry["images"]))
    console.print(table)


@data_app.command("inspect")
def inspect(
    path: Path = typer.Argument(
        ..., help="Data set root (C-NMC Kaggle or TCIA layout, class folders, or CSV root)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the contact sheet (default: PATH/../<name>_inspect)."
    ),
    layout: Layout = typer.Option("auto", help="The data set's layout (auto: detected)."),
    positive_class: str | None = typer.Option(
        None, help="For one-folder-per-class data: the ALL folder's name."
    ),
    labels_csv: Path | None = typer.Option(
        None, help="For CSV data: a CSV of path,label[,subject][,split]."
    ),
    per_class: int = typer.Option(8, help="Cells per class on the contact sheet."),
    seed: int = typer.Option(0, help="Seed for choosing the contact-sheet cells."),
    show_all: bool = typer.Option(
        False, "--all", help="List every subject (default: a summary when there are many)."
    ),
    normalize: StainNormalization = typer.Option(
        "none",
        "--normalize",
        help="Also draw the sample cells stain-normalised (as [data] normalize would).",
    ),
    normalize_reference: Path | None = typer.Option(
        None,
        "--normalize-reference",
        help="Image to fit the stain target to (default: the training images).",
    ),
) -> None:
    """Count images per split, class, fold and subject; list sizes, modes, conversions and
    ignored files; write a contact sheet of sample cells per class (Figure 1)."""
    from leukaug.data.inspect import (
        contact_sheet,
        images_per_subject_histogram,
        inspect_manifest,
        sample_images,
        subject_summary,
    )
    from leukaug.data.read import read_dataset
    from leukaug.data.stain_norm import normalize_image

    if normalize_reference is not None and normalize == "none":
        raise typer.BadParameter(
            "needs --normalize macenko or reinhard", param_hint="--normalize-reference"
        )
    dataset = read_dataset(
        path, layout=layout, positive_class=positive_class, labels_csv=labels_csv
    )
    report = inspect_manifest(dataset.manifest)
    console = Console()
    synthetic = (
        " [bold yellow](SYNTHETIC data: results say nothing about real leukaemia)[/]"
        if dataset.synthetic
        else ""
    )
    console.print(
        f"[bold]{escape(str(dataset.root))}[/]  layout={dataset.layout}  images={len(dataset.manifest)}{synthetic}"
    )
    console.print(_table("Images and subjects per source split and class", report.by_split))
    console.print(_table("Per fold", report.by_fold))
    if show_all or len(report.by_subject) <= MAX_SUBJECT_ROWS:
        console.print(_table("Per subject", report.by_subject))
    else:
        console.print(_table("Subjects per class", subject_summary(report.by_subject)))
        histogram = images_per_subject_histogram(report.by_subject)
        console.print(_table("Images per subject (subjects per class)", histogram))
        console.print(f"{len(report.by_subject)} subjects: --all lists every one.", markup=False)
    console.print(_table("Image sizes", _pairs(dataset.sizes, "size")))
    console.print(_table("Image modes (original)", _pairs(dataset.modes, "mode")))
    if dataset.conversions:
        console.print(_table("Explicit conversions to RGB", _pairs(dataset.conversions, "mode")))
    if dataset.ignored:
        console.print(
            f"[yellow]{len(dataset.ignored)} file(s) ignored (not images, or not readable):[/] "
            + escape(", ".join(dataset.ignored))
        )
    for note in dataset.notes:
        console.print(f"note: {note}", markup=False)
    out = out or path.parent / f"{path.name}_inspect"
    images, labels = sample_images(dataset, per_class=per_class, seed=seed)
    title = "Sample cells per class" + (" (synthetic)" if dataset.synthetic else "")
    sheet = contact_sheet(images, labels, Path(out) / "sample_cells.png", title=title)
    console.print(f"contact sheet: {sheet}", markup=False)
    if normalize != "none":
        target = inspect_stain_target(dataset, normalize, normalize_reference)
        moved = [normalize_image(image, target) for image in images]
        path = Path(out) / f"sample_cells_{normalize}.png"
        sheet = contact_sheet(moved, labels, path, title=f"The same cells, {target.describe()}")
        console.print(f"stain-normalised contact sheet: {sheet}", markup=False)


def inspect_stain_target(dataset, method: str, reference: Path | None):
    """The stain target `[data] normalize` would use: the reference image's, else the
    training images' (the source training split)."""
    from leukaug.data.stain_norm import reference_target, training_target

    if reference is not None:
        return reference_target(method, reference)
    manifest = dataset.manifest
    train = manifest[manifest["source_split"] == "train"].sort_values("image_id")
    return training_target(method, list(train["path"]))


def _pairs(counts: dict[str, int], name: str):
    import pandas as pd

    return pd.DataFrame({name: list(counts), "images": list(counts.values())})


def _table(title: str, frame) -> Table:
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(
            str(column), justify="right" if frame[column].dtype.kind in "iuf" else "left"
        )
    for record in frame.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in record))  # subjects and modes come from data
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("synth")(synth)
    app.add_typer(data_app, name="data")
