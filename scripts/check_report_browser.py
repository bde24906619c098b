"""Open a report.html in a real headless browser and check what its first screen shows.

    python scripts/check_report_browser.py runs/toy/report/report.html [--shot first.png]

Needs Chromium and Playwright, which rankscope itself does not: on Debian
`apt-get install chromium` and `pip install playwright` (no browser download: the script
drives /usr/bin/chromium). At a 1280 x 800 viewport (a laptop's first screen) it checks that
the recommendation (the first list of the report) and the whole trade-off figure are on the
first screen, and that every full results table is collapsed (inside a closed <details>),
prints the positions it measured and exits 1 when a check fails, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WIDTH, HEIGHT = 1280, 800
FLAGS = [  # the closed network refuses Chromium's background connections
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MEASURE = """() => {
  const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, height: r.height}; };
  const h2 = document.querySelector('h2');
  const ul = h2 && h2.nextElementSibling && h2.nextElementSibling.tagName === 'UL'
    ? h2.nextElementSibling : null;
  const img = document.querySelector('figure img');
  const tables = [...document.querySelectorAll('table')];
  const openTables = tables.filter(t => !t.closest('details') && t.offsetParent !== null);
  const closed = [...document.querySelectorAll('details')].filter(d => !d.open).length;
  return {h2: h2 && h2.textContent, ul: box(ul), ulText: ul && ul.innerText.slice(0, 200),
          img: box(img), imgAlt: img && img.alt,
          imgLoaded: img && img.complete && img.naturalWidth > 0,
          tables: tables.length, visibleTables: openTables.length, closedDetails: closed};
}"""


def check(html: Path, shot: Path | None, chromium: str) -> int:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        m = page.evaluate(MEASURE)
        if shot is not None:
            page.screenshot(path=str(shot))
        browser.close()
    print(f"viewport {WIDTH}x{HEIGHT}: {m}")
    checks = {
        "first section is the recommendation": m["h2"] == "Recommendation",
        "recommendation list on the first screen": bool(m["ul"]) and m["ul"]["bottom"] <= HEIGHT,
        "trade-off figure loaded": bool(m["imgLoaded"]) and m["imgAlt"] == "Gain vs retention cost",
        "whole trade-off figure on the first screen": bool(m["img"])
        and m["img"]["bottom"] <= HEIGHT,
        "no full table open outside the summary": m["closedDetails"] > 0,
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--shot", type=Path, default=None, help="save the first screen as PNG")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    if not args.html.is_file():
        print(f"error: {args.html}: no such file", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print(
            "error: pip install playwright (the browser itself: apt-get install chromium)",
            file=sys.stderr,
        )
        return 2
    if not Path(args.chromium).exists():
        print(f"error: no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    return check(args.html, args.shot, args.chromium)


if __name__ == "__main__":
    sys.exit(main())
