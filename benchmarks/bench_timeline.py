"""Benchmark: the timeline. How long going back takes, and what keeping history costs.

Run from the repository root::

    python benchmarks/bench_timeline.py            # 10,000 steps (~10 s)
    python benchmarks/bench_timeline.py --quick    # 2,000 steps (~2 s)

It prints figures; it asserts nothing and exits 0.

Part 1: a seeded run of STEPS steps (3 processes, 50 VMAs each, writes, reads, mprotect,
madvise, fork/exit now and then) on a machine with history. Then, from the head, it asks
for the state 1,000 steps back at 50 seeded targets (each one fresh: the cache of restored
states is emptied first), times each, and prints the median, the 95th percentile and the
worst (target: going back 1,000 steps in under 50 ms). It also times stepping back one
step at a time over 200 steps (a timeline slider dragged backwards) and rebuilding an old
step's record (call tree included) after it aged out.

At lesson scale (3 processes with 7 mappings of their own besides the 10 of the exec layout,
about 50 VMAs in all, as in the widgets' speed target; forks add a few) it times stepping back
one step at a time again, and prints the process and VMA counts it ended with.

Part 2: the same run on a machine without history and without tracing, side by side with
the first (same process, interleaved repetitions): the cost of history and of tracing per
step, as a ratio; and the memory the checkpoints take.
"""

import argparse
import os
import random
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import vmwidgets as vw  # noqa: E402

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
BASE = 0x10000000


def run(steps, seed=1, vmas=50, **machine_args):
    r = random.Random(seed)
    m = vw.Machine(ram="64M", **machine_args)
    procs = [m.spawn() for _ in range(3)]
    for p in procs:
        for i in range(vmas):
            p.mmap(BASE + i * 0x10000, 8 * P, RW, FIXED)
    while m.nr_steps < steps:
        procs = [p for p in procs if p.alive]
        p = r.choice(procs)
        a = BASE + r.randrange(vmas) * 0x10000 + r.randrange(8) * P
        k = r.random()
        try:
            if k < 0.55:
                p.write(a, bytes([r.randrange(1, 256)]))
            elif k < 0.75:
                p.read(a, 1)
            elif k < 0.87:
                p.mprotect(a, P, r.choice([vw.PROT_READ, RW]))
            elif k < 0.97:
                p.madvise(a, P, vw.MADV_DONTNEED)
            elif len(procs) < 5:
                procs.append(p.fork())
            elif len(procs) > 3:
                p.exit()
        except (OSError, vw.SegmentationFault):
            pass
    return m


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="2,000 steps")
    args = ap.parse_args()
    steps = 2_000 if args.quick else args.steps
    back = min(1_000, steps // 2)

    t0 = time.perf_counter()
    m = run(steps)
    built = time.perf_counter() - t0
    tl = m.timeline
    print(f"Part 1: {len(tl)} steps recorded in {built:.2f} s "
          f"({built / len(tl) * 1e6:.0f} us/step with history and tracing), "
          f"{len(tl.checkpoints)} checkpoints (one per {len(tl) / len(tl.checkpoints):.0f} steps on average)")

    r = random.Random(2)
    head = len(tl)
    times = []
    for _ in range(50):
        target = head - back - r.randrange(0, max(1, head - back - 1) // 4)
        tl._cache.clear()
        t = time.perf_counter()
        state = tl.state(target)
        times.append((time.perf_counter() - t) * 1000)
        assert state.nr_steps == target
    print(f"  going back ~{back} steps (50 targets, cold): median {statistics.median(times):.1f} ms, "
          f"p95 {pct(times, 0.95):.1f} ms, worst {max(times):.1f} ms  (target < 50 ms)")

    tl._cache.clear()
    t = time.perf_counter()
    for n in range(head - 1, head - 201, -1):
        tl.state(n)
    per = (time.perf_counter() - t) / 200 * 1000
    print(f"  stepping back one step at a time over 200 steps: {per:.1f} ms per step")

    old = head - back
    tl.records.pop(old, None)
    t = time.perf_counter()
    rec = tl.record(old)
    print(f"  rebuilding the record of step {old} (aged out): "
          f"{(time.perf_counter() - t) * 1000:.1f} ms; its tree has "
          f"{sum(1 for _ in rec.trace.walk()) if rec.trace else 0} calls")

    ckpt = sum(len(b) for b in tl.checkpoints.values())
    print(f"  checkpoints: {ckpt / 2**20:.1f} MiB in total, {ckpt / len(tl.checkpoints) / 1024:.0f} KiB each; "
          f"{len(tl.records)} step records kept")

    small_m = run(min(steps, 2_000), vmas=7)
    nvmas = sum(p.mm.map_count for p in small_m.processes)
    head = len(small_m.timeline)
    small_m.timeline._cache.clear()
    t = time.perf_counter()
    for n in range(head - 1, head - 201, -1):
        small_m.timeline.state(n)
    per = (time.perf_counter() - t) / 200 * 1000
    print(f"  lesson scale ({len(small_m.processes)} processes, {nvmas} VMAs in all): stepping "
          f"back one step at a time: {per:.1f} ms per step")

    print("Part 2: cost per step, same run side by side (best of 3 each)")
    small = min(steps, 4_000)
    kinds = {"history+trace": {}, "history, no trace": {"trace": False},
             "no history, no trace": {"history": False, "trace": False}}
    best = {k: float("inf") for k in kinds}
    for _ in range(3):
        for name, kw in kinds.items():
            t = time.perf_counter()
            run(small, **kw)
            best[name] = min(best[name], time.perf_counter() - t)
    base = best["no history, no trace"]
    for name in kinds:
        print(f"  {name:22} {best[name] / small * 1e6:6.1f} us/step  "
              f"ratio {best[name] / base:.2f}")


if __name__ == "__main__":
    main()
