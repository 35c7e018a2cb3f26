"""The report page: templates, scroll boxes, the differing-settings table, numbering without
gaps, escaping of hostile text, no external resources, and the screenshot script."""

from __future__ import annotations

import dataclasses
import http.server
import importlib.util
import re
import shutil
import struct
import sys
import threading
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leukaug.report import build_report
from leukaug.report.html import FigureEntry, ReportContent, render_html
from leukaug.report.markdown import render_markdown
from leukaug.report.tables import Table
from report_fixtures import make_study

ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>alert(1)</script>"
DATA_URI = re.compile(r"(?<=data:image/png;base64,)[A-Za-z0-9+/=]+")  # the payload
# a URL, a CSS fetch, a stylesheet or script tag, or any src/href that is not inline data
EXTERNAL = re.compile(
    r"""https?://|url\(|@import|<link\b|<script\b|\b(?:src|href|action|poster)=(?!["']?data:)""",
    re.IGNORECASE,
)


class Page(HTMLParser):
    """Tags with their classes and ancestors; captions; the text of every element by id."""

    VOID = frozenset({"meta", "img", "br", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str, str]] = []  # (tag, class, id)
        self.tables: list[list[tuple[str, str, str]]] = []  # each table's ancestors
        self.captions: list[str] = []
        self.figcaptions: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.text_by_id: dict[str, str] = {}
        self._capture: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "table":
            self.tables.append(list(self.stack))
        if tag not in self.VOID:
            self.stack.append((tag, values.get("class", ""), values.get("id", "")))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _tag, _cls, element_id in self.stack:
            if element_id:
                self.text_by_id[element_id] = self.text_by_id.get(element_id, "") + data
        if self.stack and self.stack[-1][1] == "caption":
            self.captions.append(data)
        if any(tag == "figcaption" for tag, _, _ in self.stack) and self.stack[-1][0] == "b":
            self.figcaptions.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def numbers(captions: list[str], word: str) -> list[int]:
    return [int(m[1]) for c in captions if (m := re.match(rf"{word} (\d+)\.", c))]


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fabricated study with one seed per arm (so the across-seeds table is dropped)."""
    study = make_study(
        tmp_path_factory.mktemp("study"),
        {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35},
        n_subjects={"train": 3, "val": 3, "test": 6},
        images_per_subject=6,
    )
    build_report(study, n_resamples=50)
    return study


@pytest.mark.slow  # builds a whole report (~10 s on two shared cores)
def test_page_renders_with_every_table_in_its_own_scroll_box(one_seed: Path) -> None:
    text = (one_seed / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for section in ("answer", "tables", "figures", "methods", "dataset", "configuration"):
        assert section in page.ids, section
    assert len(page.tables) >= 6
    for ancestors in page.tables:
        assert any(tag == "div" and "scroll" in cls.split() for tag, cls, _ in ancestors)
    css = text[text.index("<style>") : text.index("</style>")]
    assert re.search(r"\.scroll \{[^}]*overflow-x: auto", css)
    assert re.search(r"figure img \{[^}]*max-width: 100%", css)
    assert re.search(r"pre \{[^}]*overflow-x: auto", css)


@pytest.mark.slow  # builds a whole report (~10 s on two shared cores)
def test_no_external_resources(one_seed: Path) -> None:
    text = (one_seed / "report.html").read_text(encoding="utf-8")
    assert not EXTERNAL.findall(DATA_URI.sub("", text))
    assert "http://" not in text and "https://" not in text
    assert re.findall(r'src="([^"]*)"', text)  # the figures are there, and all inline:
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', text)
    )


@pytest.mark.slow  # builds a whole report (~10 s on two shared cores)
def test_numbers_have_no_gap_and_references_follow(one_seed: Path) -> None:
    text = (one_seed / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    tables = numbers(page.captions, "Table")
    figures = numbers(page.figcaptions, "Figure")
    assert tables == list(range(1, len(tables) + 1)) and len(tables) >= 4
    assert figures == list(range(1, len(figures) + 1)) and len(figures) >= 8
    summary = (one_seed / "summary.md").read_text(encoding="utf-8")
    assert re.findall(r"\*\*Table (\d+)\.", summary) == ["1", "2"]


def _content(**changes: object) -> ReportContent:
    table = Table("t", "Table 9. Numbers.", ["Arm", "Value"], [["a", "1"]])
    content = ReportContent(
        title="study",
        generated="today",
        synthetic=False,
        headline=["Per-seed results are in Table 6; see Figure 3."],
        verdict_table=None,
        notes=["The paper's Table 6 is not ours; Table 2 stays Table 2."],
        tables=[
            dataclasses.replace(table, key="table1", caption="Table 1. First."),
            dataclasses.replace(table, key="table2", caption="Table 2. Second."),
            dataclasses.replace(table, key="table6", caption="Table 6. Sixth, after Table 2."),
        ],
        figures=[
            FigureEntry("one", "Figure 1. One", "First.", None, "not available (none)"),
            FigureEntry("three", "Figure 3. Three", "Like Figure 1.", None, "missing"),
        ],
        dataset=None,
        study_toml=None,
        specs={},
        versions={"leukaug": "0"},
        methods=["Comparisons: Table 6 and Figure 3."],
    )
    return dataclasses.replace(content, **changes)


def test_dropped_items_close_the_gap_in_captions_and_text() -> None:
    text = render_html(_content())
    page = parse(text)
    assert numbers(page.captions, "Table") == [1, 2, 3]
    assert "Table 3. Sixth, after Table 2." in text
    assert numbers(page.figcaptions, "Figure") == [1, 2]
    assert "Per-seed results are in Table 3; see Figure 2." in text
    assert "The paper&#39;s Table 6 is not ours; Table 2 stays Table 2." in text
    assert "Comparisons: Table 3 and Figure 2." in text
    assert "Table 6" not in text.replace("paper&#39;s Table 6", "")
    summary = render_markdown(_content(), _content().tables[2:])
    assert "**Table 3. Sixth, after Table 2.**" in summary


def _spec(augmentations: list[dict[str, object]], seed: int) -> dict[str, object]:
    return {
        "model": "resnet18",
        "augmentations": augmentations,
        "seed": seed,
        "epochs": 3,
        "lr": 1e-4,
        "weights_path": None,
    }


def test_arm_settings_become_one_table_of_what_differs() -> None:
    flip = [{"name": "flip", "params": {}}, {"name": "rotate", "params": {"degrees": 180}}]
    specs = {
        f"{name}-s{seed}": {
            "name": name,
            "seed": seed,
            "config_hash": f"hash{name}{seed}",
            "spec": _spec(augs, seed),
        }
        for name, augs in (("baseline", []), ("flip", flip))
        for seed in (0, 1)
    }
    text = render_html(_content(specs=specs))
    page = parse(text)
    table = text[
        text.index('<table id="arm-settings"') : text.index(
            "</table>", text.index('id="arm-settings"')
        )
    ]
    header = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert header == ["Arm id", "Name", "augmentations", "seed"]
    assert "flip(" not in table and "flip + rotate(degrees=180)" in table and ">none<" in table
    assert len(re.findall(r"<tr>", table)) == 1 + 4
    shared = page.text_by_id["configuration-shared"]
    assert "model" in shared and "resnet18" in shared and "epochs" in shared
    assert "config_hash" not in shared and "weights_path" in shared
    start = text.index('<details id="arm-json">')  # folded tables' <details> come before it
    details = text[start : text.index("</details>", start)]
    assert (
        details.count("<pre>") == 4
        and "hashflip1" in details
        and "&#34;degrees&#34;: 180" in details
    )


def test_dataset_section_prints_lines_not_dicts() -> None:
    dataset = {
        "root": "/data/c-nmc",
        "layout": "tcia",
        "synthetic": False,
        "synth": None,
        "split": {"strategy": "subject", "val_fraction": 0.2, "seed": 0},
        "counts": {
            "train": {"ALL": {"images": 10, "subjects": 2}, "HEM": {"images": 5, "subjects": 1}}
        },
        "ignored": 0,
        "conversions": {},
        "image_sizes": [224, 299],
    }
    page = parse(render_html(_content(dataset=dataset)))
    facts = page.text_by_id["dataset-facts"]
    assert "{" not in facts and "[" not in facts
    assert "Image mode conversions" in facts and "Image mode conversionsnone" in facts.replace(
        "\n", ""
    )
    assert "strategy: subject, val fraction: 0.2, seed: 0" in facts
    assert "224, 299" in facts and "Syntheticno" in facts.replace("\n", "")
    assert "dataset-counts" in page.ids
    odd = render_html(_content(dataset={"root": "/x", "counts": {"train": 3}}))
    section = odd[odd.index('id="dataset"') : odd.index('id="configuration"')]
    assert "{" not in section and "Counts: train: 3" in section


def test_hostile_text_is_escaped_everywhere() -> None:
    hostile = Table("table1", f"Table 1. {EVIL}", ["Arm", EVIL], [[EVIL, EVIL]], [EVIL])
    content = _content(
        title=EVIL,
        headline=[EVIL],
        notes=[EVIL],
        tables=[hostile],
        figures=[FigureEntry(EVIL, EVIL, EVIL, b"\x89PNG\r\n\x1a\n" + b"\0" * 24, EVIL)],
        dataset={"root": EVIL, "split": {EVIL: EVIL}},
        study_toml=f'name = "{EVIL}"',
        specs={EVIL: {"name": EVIL, "seed": 0, "spec": {"model": EVIL}}},
        versions={EVIL: EVIL},
        failed=[{"arm_id": EVIL, "name": EVIL, "error_type": EVIL, "message": EVIL}],
        incomplete=[EVIL],
        methods=[EVIL],
    )
    text = render_html(content)
    assert "<script" not in text.lower()
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 15
    assert "script" not in parse(text).tags


@pytest.mark.slow  # builds a whole report (~10 s on two shared cores)
def test_fixture_arm_named_like_a_script_is_escaped(tmp_path: Path) -> None:
    study = make_study(
        tmp_path / "s",
        {"baseline": 0.3, EVIL: 1.0},
        failed=(EVIL.replace("/", "_"),),
        n_subjects={"val": 3, "test": 6},
        images_per_subject=4,
    )
    text = build_report(study, n_resamples=20)["report"].read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "&lt;script&gt;" in text


# ------------------------------------------------------------------ the screenshot script


def _screenshot_module() -> types.ModuleType:
    """scripts/screenshot_report.py, loaded by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "screenshot_report", ROOT / "scripts" / "screenshot_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_screenshot_is_full_height_and_offline(tmp_path: Path) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/pixel.png"
    page = tmp_path / "page.html"
    page.write_text(
        f'<!DOCTYPE html><html><body style="margin:0"><img src="{url}">'
        '<div style="height:3000px;width:2000px;background:#eee"></div></body></html>'
    )
    try:
        result = _screenshot_module().capture(page, 640)
    finally:
        server.shutdown()
    width, height = struct.unpack(">II", result.png[16:24])
    assert hits == []  # the browser never reached the local server
    assert result.requests == [url]  # ... though the page asked for it
    assert height >= 3000 and result.height >= 3000  # the whole page, not one window
    assert width == result.page_width == 2000 and result.window_width == 640  # overflow shows


# ------------------------------------------------------------------ layout: fits the screen


@pytest.fixture(scope="module")
def many_arms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-sized fabricated study: 16 arm names x 2 seeds (32-row per-arm tables)."""
    arms = {"baseline": 0.3} | {f"aug{k:02d}": 0.3 + 0.05 * (k % 5) for k in range(15)}
    study = make_study(
        tmp_path_factory.mktemp("many"),
        arms,
        seeds=(0, 1),
        failed=(),
        n_subjects={"train": 4, "val": 4, "test": 12},
        images_per_subject=6,
    )
    build_report(study, n_resamples=50)
    return study


def _folded_ids(text: str) -> set[str]:
    return set(re.findall(r'<details class="fold" id="fold-([^"]+)">', text))


@pytest.mark.slow
def test_per_arm_detail_is_folded_and_wide_tables_stack(many_arms: Path) -> None:
    text = (many_arms / "report.html").read_text(encoding="utf-8")
    folded = _folded_ids(text)
    assert {"table1", "table2", "table3", "table4", "table6", "table7"} <= folded  # 32+ rows
    assert "table5" in folded  # 16 arm names: more than FOLD_ROWS
    assert {"training_curves", "confusion_matrices", "subject_accuracy", "accuracy_ci"} <= folded
    assert "verdicts" not in folded and "forest" not in folded and "roc_curves" not in folded
    page = parse(text)
    assert "caption-table4" in page.ids  # a folded table keeps its caption (as the summary)
    for key in ("table2", "verdicts"):  # many columns: stacked row by row in a narrow window
        table = text[text.index(f'<table id="{key}"') :]
        table = table[: table.index("</table>")]
        assert 'class="stack"' in table.split(">")[0]
        assert table.count("<td ") == table.count("<td data-label=")
    css = text[text.index("<style>") : text.index("</style>")]
    assert "nowrap" not in css  # cells wrap, so a table fits the page
    assert re.search(r"@media \(max-width: \d+px\) \{\s*table\.stack", css)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_no_table_scrolls_sideways_and_the_page_is_short(many_arms: Path) -> None:
    capture = _screenshot_module().capture
    wide, narrow = capture(many_arms / "report.html", 1280), capture(many_arms / "report.html", 800)
    assert wide.scrolled == [] and narrow.scrolled == []
    assert wide.page_width <= 1280 and narrow.page_width <= 800
    assert wide.height <= 8000
