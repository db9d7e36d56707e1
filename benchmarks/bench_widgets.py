"""From a control change to updated views, for the Explorer: in the kernel and in a browser.

Kernel side: an address space of 50 VMAs in each of 3 processes (a parent and two forked
children), an Explorer over it, and many control changes as a student makes them: the
step slider moved to a random step, Back, Step, an mprotect run from the controls (the
live machine changes and the widget jumps to the head), a VMA chosen. Each is timed from
setting the control's value (or clicking) until the widget's views (picture SVG,
narration, call tree, maps, rmap text) hold the new state; ipywidgets runs the observers
synchronously, so this is the time the kernel spends before the front end gets the
update. Printed: median and 95th percentile per kind and overall, and the share of
building the picture (the strip and the rmap as SVG text, vmwidgets.views.svg) in it.

Browser side (``--browser``, on by default when Chromium and Playwright are there):
JupyterLab on loopback, the same machine in a notebook, Chromium clicks Back/Step; the
time from the click until the picture changes (the new SVG is in the page).

Targets (issue 5): kernel median < 50 ms and p95 < 100 ms; browser p95 < 250 ms.
Nothing is asserted; the figures are printed.

    python benchmarks/bench_widgets.py [--changes N] [--clicks N] [--no-browser]
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vmwidgets as vw  # noqa: E402

SETUP = '''import vmwidgets as vw
m = vw.Machine(ram="256M")
p = m.spawn()
base, i = 0x10000000, 0
while len(list(vw.for_each_vma(p.mm))) < 50:
    i += 1
    prot = vw.PROT_READ | (vw.PROT_WRITE if i % 2 else 0)
    p.mmap(base + i * 0x10000, 0x4000, prot, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    if prot & vw.PROT_WRITE:
        p.write(base + i * 0x10000, b"x")
children = [p.fork(), p.fork()]
for c in children:
    c.write(base + 0x10000, b"y")
'''


def machine():
    env = {}
    exec(SETUP, env)
    return env["m"], env["p"]


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt(values):
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):6.1f} ms   p95 {pct(ms, 0.95):6.1f} ms   (n={len(ms)})"


def kernel_side(changes, seed):
    m, p = machine()
    counts = [len(list(vw.for_each_vma(q.mm))) for q in m.processes]
    ex = vw.widgets.Explorer(m, pid=p.pid)
    rng = random.Random(seed)
    times = {"slider": [], "back": [], "step": [], "run mprotect": [], "choose VMA": []}
    drawn, cached = [], []
    vmas = [f"vma:{p.pid}:{0x10000000 + i * 0x10000:#x}" for i in range(1, 30, 2)]
    for _ in range(3):     # warm up: first figure, imports, caches
        ex.slider.value = rng.randrange(len(m.timeline))
    ex.timings.clear()
    for i in range(changes):
        kind = list(times)[i % len(times)]
        before = len(ex._pictures)
        t0 = time.perf_counter()
        if kind == "slider":
            ex.slider.value = rng.randrange(len(m.timeline) + 1)
        elif kind == "back":
            ex.back_button.click()
        elif kind == "step":
            ex.step_button.click()
        elif kind == "run mprotect":
            addr = 0x10000000 + rng.randrange(1, 50) * 0x10000
            ex.set_op("mprotect", addr=hex(addr), length="4K", prot=rng.choice(["r--", "rw-"]))
            ex.run_button.click()
        else:
            ex.slider.value = len(m.timeline)
            t0 = time.perf_counter()
            ex.vma.value = rng.choice([v for v in vmas if v in [o[1] for o in ex.vma.options]] or [""])
        elapsed = time.perf_counter() - t0
        times[kind].append(elapsed)
        (drawn if len(ex._pictures) > before or len(ex._pictures) == ex.picture_cache else cached).append(elapsed)
    print(f"Kernel side: {len(m.processes)} processes with {counts} VMAs, "
          f"{len(m.timeline)} steps of history, picture {len(ex.picture.value) // 1024} KiB SVG")
    for kind, values in times.items():
        print(f"  {kind:14s} {fmt(values)}")
    every = [v for values in times.values() for v in values]
    print(f"  {'all':14s} {fmt(every)}   targets: median < 50 ms, p95 < 100 ms")
    print(f"  {'new picture':14s} {fmt(drawn)}   (a step/selection not shown before: drawn)")
    if cached:
        print(f"  {'kept picture':14s} {fmt(cached)}   (shown before: the SVG is reused)")
    picture = [t[1] for t in ex.timings]
    print(f"  of which the picture (SVG text, or a kept one): {fmt(picture)}")


def browser_side(clicks):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("Browser side: skipped (Playwright for Python is not installed)")
        return
    if not Path("/usr/bin/chromium").exists():
        print("Browser side: skipped (no /usr/bin/chromium; `make browser`)")
        return
    import nbformat
    from tests.browser.servers import jupyter_server
    from tests.browser.test_widgets_browser import JS_CLICK_AND_TIME, PICTURE_READY
    from tests.browser.test_lab_smoke import JS_RUN_FINISHED, open_notebook, run_all_cells
    from tests.browser.conftest import CHROMIUM_ARGS

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell("vw.widgets.Explorer(m, pid=p.pid)")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, src / "bench.ipynb")
        with jupyter_server(src, Path(tmp) / "work", Path(tmp) / "server.log") as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            open_notebook(page, server, "bench.ipynb")
            run_all_cells(page)
            page.wait_for_function(JS_RUN_FINISHED, timeout=120_000)
            page.wait_for_selector(PICTURE_READY, timeout=120_000)
            for _ in range(3):   # warm up
                page.evaluate(JS_CLICK_AND_TIME, ".vmw-back")
            times = []
            for i in range(clicks):
                sel = ".vmw-back" if (i // 5) % 2 == 0 else ".vmw-step"
                t = page.evaluate(JS_CLICK_AND_TIME, sel)
                if t is not None:
                    times.append(t / 1000)
            browser.close()
    print(f"Browser side (JupyterLab in Chromium, Back/Step clicks): click -> new picture "
          f"{fmt(times)}   target: p95 < 250 ms")
    out = ROOT / "test-artifacts" / "browser" / "bench-widgets-browser.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"unit": "ms", "times": [t * 1000 for t in times]}, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=200, help="control changes timed in the kernel")
    ap.add_argument("--clicks", type=int, default=40, help="clicks timed in the browser")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-browser", action="store_true", help="skip the browser measurement")
    args = ap.parse_args()
    kernel_side(args.changes, args.seed)
    if not args.no_browser:
        browser_side(args.clicks)


if __name__ == "__main__":
    main()
