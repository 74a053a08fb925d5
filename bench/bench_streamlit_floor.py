"""The floor under the Images page's render target: a bare Streamlit page (a title and 48 checkboxes in
6 columns, no database, no images) loaded in Debian's Chromium, first visit and cold browser contexts.

    python bench/bench_streamlit_floor.py

Prints seconds until the page's last element is drawn (median of 5 of each: a browser that never
opened the app, and a new tab in one that did), and the load. Compare with
bench/bench_images_page.py --browser (the real page with 48 thumbnails on 100,000 rows).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGE = '''import streamlit as st
st.title("floor")
cols = st.columns(6)
for i in range(48):
    cols[i % 6].checkbox(f"image {i}", key=f"c{i}")
st.markdown("<div id='done'>done</div>", unsafe_allow_html=True)
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(repeats: int = 5) -> None:
    from playwright.sync_api import sync_playwright

    from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS

    app = Path(tempfile.mkdtemp(prefix="bench-floor-")) / "app.py"
    app.write_text(PAGE)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                               "--server.port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        times: dict[str, list[float]] = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

            def timed(label, page):
                started = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#done", timeout=60_000)
                times.setdefault(label, []).append(round(time.perf_counter() - started, 2))

            for round_number in range(repeats + 1):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                timed("first_visit" if round_number == 0 else "fresh_profile", context.new_page())
                if round_number:  # the same browser again, a new tab: Streamlit's scripts are cached
                    timed("returning_user", context.new_page())
                context.close()
            browser.close()
        for label, values in times.items():
            print(f"bare Streamlit page, {label}: median {statistics.median(values):.2f} s "
                  f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)")
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
