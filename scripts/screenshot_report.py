#!/usr/bin/env python3
"""Render a report.html in Debian's headless chromium and save a PNG of the WHOLE page.

    .venv/bin/python scripts/screenshot_report.py STUDY_DIR_OR_REPORT_HTML [--out FILE.png] [--width 1280]
    .venv/bin/python scripts/screenshot_report.py --demo [--seeds 1] [--out FILE.png] [--width 800]

`--demo` fabricates a study (tests/report_fixtures.py) in a temporary folder and builds its
report first. The browser is driven over the DevTools protocol on a pipe (no port is opened):
the page is laid out at `--width` CSS pixels and captured at its full height.

Networking is disabled: every request goes to a proxy that does not exist (loopback
included) and every host name resolves to nothing, so a page that needed the network would
show broken images. Every request the page made other than `data:` and `file:` is listed,
and so is a page wider than the window (it would scroll sideways) and every box whose
content is wider than it (a table scrolled sideways or cut off; `<pre>` blocks may
scroll); any of these makes the exit status 1. Install the browser with `apt-get install -y chromium`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NO_NETWORK = [
    "--proxy-server=http://127.0.0.1:9",  # nothing listens on the discard port
    "--proxy-bypass-list=<-loopback>",  # loopback goes through that proxy too
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
LOCAL_SCHEMES = ("data:", "file:", "about:")
REPLY_TIMEOUT_S = 120
# Every element whose content is wider than its box (a table that scrolls sideways inside its
# box, or is cut off), named by its id or its first table's id.
SCROLLED = """JSON.stringify(Array.from(document.querySelectorAll('body *'))
  .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible'
          && e.clientWidth > 1 && e.tagName !== 'PRE')  // 1 px: visually hidden
  .map(e => (e.id || (e.querySelector('table') || {}).id || e.tagName)
            + ' (' + e.scrollWidth + ' px in ' + e.clientWidth + ')'))"""


def demo_study(directory: Path, seeds: int) -> Path:
    """Build the report of a fabricated study (four arms, one failed arm); return report.html."""
    sys.path.insert(0, str(ROOT / "tests"))
    from leukaug.report import build_report
    from report_fixtures import make_study

    study = make_study(
        directory / "study",
        {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35, "always_hem": "always_hem"},
        seeds=tuple(range(seeds)),
        n_subjects={"train": 20, "val": 8, "test": 28},  # C-NMC's preliminary test set: 28 subjects
        images_per_subject=40,
    )
    return build_report(study)["report"]


@dataclass
class DevTools:
    """A minimal DevTools-protocol client over chromium's --remote-debugging-pipe (fds 3 and 4)."""

    process: subprocess.Popen[bytes]
    to_browser: int
    from_browser: int
    events: list[dict[str, Any]] = field(default_factory=list)
    buffer: bytes = b""
    next_id: int = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if not select.select([self.from_browser], [], [], REPLY_TIMEOUT_S)[0]:
                raise SystemExit(f"chromium sent nothing for {REPLY_TIMEOUT_S} s")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise SystemExit("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise SystemExit(f"chromium exited before {method}") from None
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SystemExit(f"chromium: {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def stop(self) -> None:
        """Close the pipes (chromium exits when its command pipe closes); kill it if it lingers."""
        os.close(self.to_browser)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.from_browser)

    def wait_for(self, method: str) -> dict[str, Any]:
        for k, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(k)
        while True:
            event = self._read_message()
            if event.get("method") == method:
                return event
            self.events.append(event)


def start_browser(profile: str) -> DevTools:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get update && apt-get install -y chromium")
    to_child, to_browser = os.pipe()
    from_browser, from_child = os.pipe()
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        *NO_NETWORK,
        "about:blank",
    ]

    # chromium reads commands on fd 3 and writes replies on fd 4; bash (unlike dash, which
    # knows fds 0-9 only) moves the pipes there. to_child < from_child, so neither is clobbered.
    redirect = f'exec "$@" 3<&{to_child} 4>&{from_child}'
    process = subprocess.Popen(
        ["bash", "-c", redirect, "bash", *command],
        pass_fds=(to_child, from_child),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_child)
    os.close(from_child)
    return DevTools(process, to_browser, from_browser)


@dataclass
class Capture:
    png: bytes
    page_width: int
    window_width: int
    height: int
    requests: list[str]
    scrolled: list[str]  # boxes (tables) wider than their place: they scroll or are cut off


def capture(report: Path, width: int) -> Capture:
    """Lay the page out `width` CSS px wide and capture all of it."""
    with tempfile.TemporaryDirectory() as profile:
        tools = start_browser(profile)
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Page.enable", "Network.enable"):
                tools.call(domain, session)
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=width,
                height=800,
                deviceScaleFactor=1,
                mobile=False,
            )
            tools.call("Page.navigate", session, url=report.resolve().as_uri())
            tools.wait_for("Page.loadEventFired")
            size = tools.call(
                "Runtime.evaluate",
                session,
                expression="JSON.stringify([document.documentElement.scrollWidth,"
                " document.documentElement.scrollHeight, window.innerWidth])",
                returnByValue=True,
            )["result"]["value"]
            page_width, height, window_width = json.loads(size)
            scrolled = json.loads(
                tools.call("Runtime.evaluate", session, expression=SCROLLED, returnByValue=True)[
                    "result"
                ]["value"]
            )
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            shot = tools.call(
                "Page.captureScreenshot", session, format="png", captureBeyondViewport=True
            )
            requests = [
                event["params"]["request"]["url"]
                for event in tools.events
                if event.get("method") == "Network.requestWillBeSent"
            ]
            tools.call("Browser.close")
        finally:
            tools.stop()
    return Capture(
        base64.b64decode(shot["data"]),
        page_width,
        window_width,
        height,
        [url for url in requests if not url.startswith(LOCAL_SCHEMES)],
        scrolled,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?", type=Path, help="a study folder or its report.html")
    parser.add_argument(
        "--demo", action="store_true", help="fabricate a study and screenshot its report"
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm of the --demo study")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "leukaug-report-screenshot.png"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.demo:
            report = demo_study(Path(scratch), args.seeds)
        elif args.target is None:
            parser.error("give a study folder or report.html, or --demo")
        else:
            report = args.target / "report.html" if args.target.is_dir() else args.target
        if not report.is_file():
            parser.error(f"{report} does not exist")
        result = capture(report, args.width)
    args.out.write_bytes(result.png)
    print(f"{args.out}: {args.width} x {result.height} CSS px")
    problems = [f"the page tried to fetch {url}" for url in result.requests]
    if result.page_width > result.window_width:
        problems.append(
            f"the page is {result.page_width} px wide in a {result.window_width} px window: "
            "it scrolls sideways"
        )
    problems += [f"{name} is wider than its place: it scrolls sideways or is cut off"
                 for name in result.scrolled]  # fmt: skip
    for problem in problems:
        print(problem, file=sys.stderr)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
