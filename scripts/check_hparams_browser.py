"""TensorBoard's HParams dashboard in a real browser: are a sweep's swept keys listed first, and shown?

Runs a 4-job sweep (optimizer=sgd,adam x lr=0.1,0.01, 1 epoch each) in a temporary folder, starts
`tensorboard --logdir <sweep>/tensorboard` on a free local port, opens its HParams tab in headless
Chromium (driven by Playwright) and reads the dashboard's hyperparameter checkboxes, in order, as
the page shows them. Prints them, saves a screenshot, and exits 1 unless the swept keys come first
and are checked (shown) and each trial is named by its overrides.

Needs what the tests do not: Chromium and Playwright (Debian: `apt-get install chromium`;
`pip install playwright`, which drives the system's Chromium, no browser download):

    python scripts/check_hparams_browser.py --screenshot docs/img/hparams.png
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEPT = ["optimizer", "lr"]
SWEEP = ["-m", "optimizer=sgd,adam", "lr=0.1,0.01", "epochs=1", "trainer.device=cpu"]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# Every element, shadow roots included (TensorBoard's Polymer panes live in them).
ALL_ELEMENTS = """() => { const walk = (root, acc) => { for (const el of root.querySelectorAll('*')) {
  if (el.shadowRoot) walk(el.shadowRoot, acc); acc.push(el); } return acc; }; return walk(document, []); }"""
CHECKBOXES = f"""() => ({ALL_ELEMENTS})().filter(e => e.tagName === 'PAPER-CHECKBOX')
  .map(b => [b.textContent.trim(), !!b.checked])"""
TRIAL_NAMES = f"""() => ({ALL_ELEMENTS})().filter(e => e.tagName === 'VAADIN-GRID-CELL-CONTENT')
  .map(c => c.textContent.trim())"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_dashboard(url: str, screenshot: Path | None) -> tuple[list[tuple[str, bool]], list[str]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/#hparams", wait_until="networkidle")
        for _ in range(30):  # the dashboard fills in after its first requests
            boxes = page.evaluate(CHECKBOXES)
            if any(name == SWEPT[-1] for name, _ in boxes):
                break
            time.sleep(0.5)
        time.sleep(1)
        boxes, cells = page.evaluate(CHECKBOXES), page.evaluate(TRIAL_NAMES)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        browser.close()
    return boxes, cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, help="where to save the HParams tab as a PNG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        command = [sys.executable, "-m", "trainer_cli", *SWEEP, f"hydra.sweep.dir={sweep}"]
        subprocess.run(command, cwd=tmp, check=True, capture_output=True)
        port = free_port()
        board = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep / "tensorboard"), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(6)
            boxes, cells = read_dashboard(f"http://127.0.0.1:{port}", args.screenshot)
        finally:
            board.terminate()
    # The hyperparameters' boxes come first, then the metrics' (`hparam/...`), then the statuses'.
    metrics = [i for i, (name, _) in enumerate(boxes) if name.startswith("hparam/")]
    hparams = [(name, shown) for name, shown in boxes[: metrics[0] if metrics else len(boxes)] if name]
    print("HParams tab, hyperparameters in the order shown ([x] = a column by default):")
    for name, shown in hparams:
        print(f"  [{'x' if shown else ' '}] {name}")
    trials = sorted({c for c in cells if c.startswith(tuple(f"{k}=" for k in SWEPT))})
    print("trial names:", ", ".join(trials) or "(none read)")
    first = [name for name, _ in hparams[: len(SWEPT)]]
    ok = sorted(first) == sorted(SWEPT) and all(shown for _, shown in hparams[: len(SWEPT)])
    print("swept keys first and shown:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
