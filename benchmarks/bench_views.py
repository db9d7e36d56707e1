"""Time the views (vmwidgets/views/) at lesson scale: 3 processes of 50 VMAs each.

Prints, for every view, the median and 95th percentile of (a) building the artists on
a reused Axes (what a widget does on each step), (b) the text alternative, and (c)
rendering the figure with Agg to PNG; then the total of one redraw of all views
(draw + text, plus narration when views/narration.py provides it), whose median the
widgets' budget wants under 50 ms. Asserts nothing.

    python benchmarks/bench_views.py [--reps 30]
"""

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402
matplotlib.use("Agg")

import vmwidgets as vw  # noqa: E402
from vmwidgets import views  # noqa: E402

RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


def lesson_machine():
    """3 processes with 50 VMAs each (alternating R/RW so that nothing merges), a
    few touched pages per VMA, two CPUs; then one more step to narrate."""
    m = vw.Machine(ram="64M", cpus=2, swap="4M")
    p = m.spawn()
    base = 0x100000000
    n = 50 - p.mm.map_count
    for i in range(n):
        addr = base + i * 4 * 4096
        p.mmap(addr, 4 * 4096, RW if i % 2 else vw.PROT_READ, ANON | vw.MAP_FIXED)
        if i % 2:
            p.write(addr, b"x")
            p.write(addr + 4096, b"y")
        else:
            p.read(addr, 1)
    kids = [p.fork(), p.fork()]
    m.switch_to(1, kids[0])
    kids[0].write(base + 4 * 4096, b"z")
    p.mprotect(base + 3 * 4 * 4096, 4096, vw.PROT_READ)
    return m, p, base


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def fmt(ms):
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    m, p, base = lesson_machine()
    n = m.nr_steps
    before, after = m.timeline.state(n - 1), m.timeline.state(n)
    changes = views.step_changes(before, after)
    record = m.timeline.record(n - 1)
    print(f"{len(m.processes)} processes, VMAs {[q.mm.map_count for q in m.processes]}, "
          f"{len(views.frame_rows(m))} frames in use, {views.rmap_graph(m).number_of_nodes()} rmap nodes")

    from matplotlib.figure import Figure
    axes = {k: Figure(figsize=s).add_subplot() for k, s in
            [("as", (10, 2.4)), ("rmap", (9, 6)), ("walk", (9, 2.6)), ("frames", (8, 3)), ("tlb", (9, 3.2))]}
    prev = {}
    addr = base + 4 * 4096
    draws = {
        "address space": lambda: views.draw_address_space(m, p.pid, ax=axes["as"], changes=changes),
        "rmap graph": lambda: prev.__setitem__("pos", views.draw_rmap(
            m, ax=axes["rmap"], changes=changes, previous=prev.get("pos")).rmap_layout),
        "page walk": lambda: views.draw_walk(m, p.pid, addr, ax=axes["walk"], changes=changes),
        "frames": lambda: views.draw_frames(m, ax=axes["frames"], changes=changes),
        "tlb": lambda: views.draw_tlb(m, ax=axes["tlb"], changes=changes),
    }
    texts = {
        "address space": lambda: views.address_space_text(m, p.pid, changes),
        "rmap graph": lambda: views.rmap_text(m, graph=axes["rmap"].rmap_graph),
        "page walk": lambda: views.walk_text(m, p.pid, addr, changes),
        "frames": lambda: views.frames_text(m, changes),
        "tlb": lambda: views.tlb_text(m, changes),
    }
    key = dict(zip(draws, axes))
    try:
        from vmwidgets.views.narration import narrate
    except ImportError:
        narrate = None
    print(f"\n{'view':<15} {'draw (artists)':<34} {'text alternative':<34} render to PNG (Agg)")
    svg = []
    for name in draws:
        d = timed(draws[name], args.reps)
        t = timed(texts[name], args.reps)
        fig = axes[key[name]].figure

        def render(fig=fig):
            fig.savefig(io.BytesIO(), format="png", dpi=72)
        r = timed(render, max(5, args.reps // 3))
        print(f"{name:<15} {fmt(d):<34} {fmt(t):<34} {fmt(r)}")
        matplotlib.rcParams["svg.fonttype"] = "none"

        def render_svg(fig=fig):
            fig.savefig(io.BytesIO(), format="svg")
        svg.append(statistics.median(timed(render_svg, max(5, args.reps // 3))))
        matplotlib.rcParams["svg.fonttype"] = "path"

    print("render to SVG (svg.fonttype none), medians: "
          + ", ".join(f"{n} {v:.1f} ms" for n, v in zip(draws, svg)))
    print("(rendering is the widget's cost, not the views': text glyphs dominate it)")

    def redraw_all():
        for name in draws:
            draws[name]()
            texts[name]()
        if narrate is not None:
            narrate(record, before, after)

    def redraw_with_diff():
        views.step_changes(before, after)
        redraw_all()

    total = timed(redraw_all, args.reps)
    print(f"\none redraw of all views (artists + text{' + narration' if narrate else ''}): {fmt(total)}"
          f"   target: median < 50 ms")
    print(f"  ... plus step_changes(before, after):             {fmt(timed(redraw_with_diff, args.reps))}")
    if narrate is None:
        print("  (views/narration.py is not there yet: narration not included)")


if __name__ == "__main__":
    main()
