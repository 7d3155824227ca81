"""The report opened in a real headless browser, with the network unreachable.

Driven through chromium's own command line (no Python driver needed): `--dump-dom` after a
virtual-time budget gives the DOM once plotly.js has drawn, `--screenshot` a PNG. Console errors
are caught by a probe script put in front of the page (before plotly.js runs) that records
console.error calls and uncaught errors on the <html> element, where the dumped DOM shows them.
"""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import SyntheticGrid

from analysis.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)
EXPECTED_PLOTS = 6  # regime map, accuracy, LAMP - ERK, boundary against tau, densities, fidelity
PROBE = """<script>
(() => {
  const seen = [];
  const keep = (kind, message) => {
    seen.push(kind + ": " + message);
    document.documentElement.setAttribute("data-console-errors", JSON.stringify(seen));
  };
  const original = console.error.bind(console);
  console.error = (...args) => {
    keep("console.error", args.map(String).join(" "));
    original(...args);
  };
  window.addEventListener("error", (e) => keep("uncaught", e.message));
  window.addEventListener("unhandledrejection", (e) => keep("rejection", String(e.reason)));
})();
</script>"""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class PlotCensus(HTMLParser):
    """Counts plotly plot containers, and those holding a drawn SVG with at least one trace."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.plot_depth = 0, None
        self.plots, self.rendered = 0, 0
        self.console_errors: list[str] = []
        self._svg = self._trace = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "html" and attributes.get("data-console-errors"):
            self.console_errors = json.loads(attributes["data-console-errors"])
        classes = (attributes.get("class") or "").split()
        if self.plot_depth is None and "js-plotly-plot" in classes:
            self.plot_depth, self._svg, self._trace = self.depth, False, False
            self.plots += 1
        elif self.plot_depth is not None:
            self._svg |= "main-svg" in classes
            self._trace |= "trace" in classes or "hm" in classes
        if tag not in VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        self.depth -= 1
        if self.plot_depth is not None and self.depth == self.plot_depth:
            self.rendered += self._svg and self._trace
            self.plot_depth = None


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any fetch would fail
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        "--window-size=1280,2400",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    grid = SyntheticGrid(
        datasets=("cifar10", "cifar100"),
        archs=("resnet20",),
        sparsities=(0.9, 0.92, 0.94, 0.96),
        repairs=("none", "bn_recal", "channel_var_shrink"),
        seeds=3,
        error_rate=0.05,
    )
    grid.write(tmp / "results")
    report = write_report(tmp / "results", tmp / "report.html")
    probed = tmp / "probed.html"
    text = report.read_text(encoding="utf-8")
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    return probed


def test_every_plot_renders_without_console_errors(page, tmp_path):
    result = chromium(page, tmp_path / "profile", "--dump-dom")
    census = PlotCensus()
    census.feed(result.stdout)
    assert census.console_errors == []
    uncaught = [
        line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line
    ]
    assert uncaught == []
    assert census.plots == EXPECTED_PLOTS
    assert census.rendered == EXPECTED_PLOTS


def test_screenshot_is_not_blank(page, tmp_path):
    from PIL import Image  # ships with torchvision

    shot = tmp_path / "report.png"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 10
    assert (pixels < 200).mean() > 0.02  # a fair share of drawn, non-background pixels
