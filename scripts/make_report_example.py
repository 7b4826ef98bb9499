"""Write the example HTML report of the docs: a demo run's page and its screenshot.

Runs ``hardprompts demo`` (PIN on the shipped reviews, the built-in model, ``--steps``), writes
its page with ``hardprompts report RUN --html`` and screenshots the page in Debian's headless
chromium (``/usr/bin/chromium``, driven by playwright; never a downloaded browser):

    python scripts/make_report_example.py     # -> docs/examples/report.html, report.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from hardprompts.demo import demo_config, run_demo
from hardprompts.html_report import write_html_report

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "examples")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo-run"
        run_demo(demo_config(None, "pin", args.steps, str(run)))
        page = write_html_report([run], args.out / "report.html")
        shutil.rmtree(run)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(page.resolve().as_uri(), wait_until="load")
        tab.wait_for_timeout(300)
        tab.screenshot(path=str(args.out / "report.png"), full_page=True)
        browser.close()
    print(f"wrote {page} and {args.out / 'report.png'}")


if __name__ == "__main__":
    main()
