"""Benchmark: the model's fork() against the number of touched pages, and rmap walks down a
chain of forks.

Run from the repository root::

    python benchmarks/bench_fork_rmap.py            # full run (~15-30 s)
    python benchmarks/bench_fork_rmap.py --quick    # smaller figures (~2-5 s)

It prints figures and a summary; it asserts nothing and exits 0.

Part 1, fork: a process maps one private anonymous region of N pages and writes one byte
to each (N = 1,000, 10,000 and 100,000; up to 10,000 with --quick), then forks. The script
times the touch, the fork itself (the best and the median of a few fork + child exit cycles
on the same parent, with the cyclic garbage collector on and off) and the child's exit,
and measures with ``tracemalloc`` the peak memory allocated during one more fork (traced
separately: tracing slows the model several times). It prints per-page costs and how they grow from
one size to the next.

Part 2, rmap: a process writes K pages (128 by default), then forks a chain p0 -> p1 ->
... -> pD (each child forks the next; all stay alive), and child j writes page j (one COW
per child, so every child gets an anon_vma of its own and the anon_vma tree is D deep).
For D = 10, 50 and 100 it times ``list(vw.rmap_walk(m, pfn))`` on: page 0, never COWed
(mapped by all D+1 processes); the copy of page D/2 made by p(D/2), mapped by it and its
descendants; the copy made by the last child; and p0's original of page 1, which only p0
still maps but which sits on the root anon_vma, so the walk checks every VMA of the family.
It also times building the chain and measures its peak memory.
"""

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc

# Run as a script from a checkout: make the package importable without installing it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import vmwidgets as vw  # noqa: E402

PAGE = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
PRIVATE_ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
RAM = "1G"                      # 262,144 frames: room for 100,000 pages and their tables

FORK_SIZES = (1000, 10000, 100000)
CHAIN_DEPTHS = (10, 50, 100)


def _mb(nbytes):
    return nbytes / (1024 * 1024)


def _fmt_bytes(nbytes):
    if nbytes >= 1024 * 1024:
        return f"{_mb(nbytes):.1f} MiB"
    return f"{nbytes / 1024:.1f} KiB"


def _growth(ratio_size, ratio_cost):
    """A word on how a cost grew against the size."""
    per = ratio_cost / ratio_size
    if per > 1.5:
        return "superlinear"
    if per < 0.67:
        return "sublinear"
    return "about linear"


def _traced(fn):
    """Run ``fn()`` under tracemalloc; return (result, peak bytes, bytes still held after)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, current


# -- part 1: fork against the number of touched pages ---------------------------------------

def touched_process(n):
    """A fresh machine whose one process has written one byte to each of ``n`` pages.
    Returns (machine, process, seconds the writes took)."""
    m = vw.Machine(ram=RAM)
    p = m.spawn()
    base = p.mmap(0, n * PAGE, RW, PRIVATE_ANON)
    write = p.write
    t0 = time.perf_counter()
    for i in range(n):
        write(base + i * PAGE, b"x")
    return m, p, time.perf_counter() - t0


def fork_cycles(p, reps, gc_on):
    """``reps`` cycles of fork + child exit on ``p``. Returns (fork seconds, exit seconds)."""
    forks, exits = [], []
    was_enabled = gc.isenabled()
    (gc.enable if gc_on else gc.disable)()
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            child = p.fork()
            t1 = time.perf_counter()
            child.exit()
            t2 = time.perf_counter()
            forks.append(t1 - t0)
            exits.append(t2 - t1)
    finally:
        (gc.enable if was_enabled else gc.disable)()
    return forks, exits


def part1(sizes, reps_small, reps_large, validate_small):
    print("== Part 1: fork of a process with N touched pages")
    print("   one MAP_PRIVATE|MAP_ANONYMOUS region of N pages, one 1-byte write per page, then")
    print(f"   fork + child exit cycles on that parent: {reps_small} for N <= 10,000, "
          f"{reps_large} above; the best time")
    print("   is the main figure (the least disturbed by other load), median and spread beside")
    print("   (the first fork also write-protects the parent's PTEs; the later ones find them")
    print("   read-only already). Peak memory: tracemalloc around one more fork, traced apart.")
    rows = {}
    validated = None
    for n in sizes:
        gc.collect()
        m, p, touch_s = touched_process(n)
        reps = reps_small if n <= 10000 else reps_large
        forks, exits = fork_cycles(p, reps, gc_on=True)
        forks_nogc, _ = fork_cycles(p, reps, gc_on=False)

        def traced_fork():
            return p.fork()

        child, peak, held = _traced(traced_fork)
        if validate_small and validated is None:
            # The smallest configuration, with the child still alive: a full check.
            try:
                vw.validate(m)
                validated = "ok"
            except Exception as exc:  # report, do not assert
                validated = f"FAILED: {exc!r}"
            validated += f" (N = {n:,}, parent and child alive after the fork)"
        child.exit()
        row = {
            "touch": touch_s, "fork": min(forks), "fork_med": statistics.median(forks),
            "fork_first": forks[0], "fork_max": max(forks), "fork_nogc": min(forks_nogc),
            "exit": min(exits), "peak": peak, "held": held, "reps": reps,
        }
        rows[n] = row
        print(f"   N = {n:>7,}: touch {row['touch']:7.3f} s ({1e6 * touch_s / n:5.1f} us/page)")
        print(f"                fork  {row['fork']:7.3f} s ({1e6 * row['fork'] / n:5.2f} us/page, "
              f"best of {reps}; median {row['fork_med']:.3f}, first {row['fork_first']:.3f}, "
              f"max {row['fork_max']:.3f})")
        print(f"                fork with gc off {row['fork_nogc']:7.3f} s "
              f"({1e6 * row['fork_nogc'] / n:5.2f} us/page, best of {reps})")
        print(f"                child exit {row['exit']:7.3f} s ({1e6 * row['exit'] / n:5.2f} "
              f"us/page)")
        print(f"                fork peak memory {_fmt_bytes(peak)} ({peak / n:.0f} B/page), "
              f"still held by the child {_fmt_bytes(held)} ({held / n:.0f} B/page)")
        del m, p, child
    print("   growth:")
    for a, b in zip(sizes, sizes[1:]):
        x = b / a
        ra, rb = rows[a], rows[b]
        t = rb["fork"] / ra["fork"]
        tn = rb["fork_nogc"] / ra["fork_nogc"]
        mem = rb["peak"] / ra["peak"]
        touch = rb["touch"] / ra["touch"]
        print(f"     x{x:g} pages ({a:,} -> {b:,}): fork x{t:.1f} time ({_growth(x, t)}; gc off "
              f"x{tn:.1f}, {_growth(x, tn)}), x{mem:.1f} peak memory ({_growth(x, mem)}), "
              f"touch x{touch:.1f}")
    return {"rows": rows, "validated": validated}


# -- part 2: rmap walks down a chain of forks ----------------------------------------------------

def build_chain(depth, k):
    """p0 writes ``k`` pages, then p0 forks p1, p1 forks p2, ... to p``depth``; child j
    writes page j (wrapping past ``k - 1``). Returns (machine, processes, base address,
    seconds of the whole chain, seconds of each fork alone)."""
    m = vw.Machine(ram=RAM)
    p0 = m.spawn()
    base = p0.mmap(0, k * PAGE, RW, PRIVATE_ANON)
    for i in range(k):
        p0.write(base + i * PAGE, b"0")
    procs = [p0]
    fork_times = []
    t0 = time.perf_counter()
    for j in range(1, depth + 1):
        tf = time.perf_counter()
        child = procs[-1].fork()
        fork_times.append(time.perf_counter() - tf)
        child.write(base + cow_page(j, k) * PAGE, b"c")
        procs.append(child)
    return m, procs, base, time.perf_counter() - t0, fork_times


def cow_page(j, k):
    """The page child j writes: page j, wrapping within 1..k-1 (page 0 is never COWed)."""
    return 1 + (j - 1) % (k - 1)


def time_walk(m, pfn, loops, reps):
    """Median seconds of one ``list(vw.rmap_walk(m, pfn))`` and the mappings it found."""
    found = list(vw.rmap_walk(m, pfn))
    per = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(loops):
            list(vw.rmap_walk(m, pfn))
        per.append((time.perf_counter() - t0) / loops)
    return min(per), found


def candidates(m, pfn):
    """How many VMAs the walk has to check: the AVCs on the page's anon_vma (read only)."""
    mapping = getattr(m.phys.pages[pfn], "mapping", None)
    tree = getattr(mapping, "rb_root", None)
    return len(tree) if tree is not None else None


def part2(depths, k, loops, reps, builds, validate_small):
    print()
    print("== Part 2: rmap walks down a chain of forks")
    print(f"   p0 writes {k} pages, then forks p1, p1 forks p2, ... (all alive); child j writes "
          f"page j (one COW each)")
    print(f"   list(vw.rmap_walk(m, pfn)) timed as the best of {reps} batches of {loops} walks;"
          f" build: best of {builds} builds")
    rows = {}
    validated = None
    for depth in depths:
        gc.collect()
        build_s, fork_s = float("inf"), None
        for _ in range(builds):     # keep the last chain for the walks
            gc.collect()
            m, procs, base, b_s, f_s = build_chain(depth, k)
            build_s = min(build_s, b_s)
            fork_s = f_s if fork_s is None else [min(a, b) for a, b in zip(fork_s, f_s)]
        # Each fork at its depth (best of the builds): the first and the last few.
        few = min(5, depth)
        early_fork_s = statistics.mean(fork_s[:few])
        late_fork_s = statistics.mean(fork_s[-few:])
        mid = depth // 2 if depth >= 2 else 1
        pages = [
            ("page 0, never COWed", procs[0].pagemap(base).pfn, depth + 1),
            (f"copy of page {cow_page(mid, k)} made by p{mid}",
             procs[mid].pagemap(base + cow_page(mid, k) * PAGE).pfn, None),
            (f"copy of page {cow_page(depth, k)} made by p{depth} (last)",
             procs[depth].pagemap(base + cow_page(depth, k) * PAGE).pfn, 1),
            ("p0's original of page 1 (COWed by p1)",
             procs[0].pagemap(base + PAGE).pfn, None),
        ]
        walks = []
        for label, pfn, _ in pages:
            sec, found = time_walk(m, pfn, loops, reps)
            walks.append((label, sec, len(found), candidates(m, pfn)))
        if validate_small and validated is None:
            try:
                vw.validate(m)
                validated = "ok"
            except Exception as exc:  # report, do not assert
                validated = f"FAILED: {exc!r}"
            validated += f" (chain of {depth} forks, {depth + 1} processes alive)"
        n_anon_vmas = len(getattr(m, "anon_vmas", ()))
        t0 = time.perf_counter()
        for proc in reversed(procs):
            proc.exit()
        teardown_s = time.perf_counter() - t0
        del m, procs

        # The same chain again under tracemalloc, for its peak memory (tracing is slow).
        (m2, procs2, _, _, _), peak, held = _traced(lambda: build_chain(depth, k))
        del m2, procs2

        rows[depth] = {"build": build_s, "late_fork": late_fork_s, "walks": walks,
                       "peak": peak, "held": held, "teardown": teardown_s}
        print(f"   chain of {depth:3d} forks: build {build_s:.3f} s ({1e3 * build_s / depth:.2f} ms"
              f"/fork+COW), {n_anon_vmas} anon_vmas; "
              f"exit of all {depth + 1} {teardown_s:.3f} s")
        print(f"                        one fork: {1e3 * early_fork_s:.2f} ms at depth 1-{few}, "
              f"{1e3 * late_fork_s:.2f} ms at depth {depth - few + 1}-{depth} (mean, best of "
              f"{builds} builds)")
        print(f"                        build peak memory {_fmt_bytes(peak)} "
              f"({_fmt_bytes(peak / depth)}/fork; {_fmt_bytes(held)} held at the end)")
        for label, sec, nmap, cand in walks:
            cand_s = f"{cand:3d} VMAs checked" if cand is not None else "? VMAs checked"
            per_cand = f", {1e6 * sec / cand:.2f} us/VMA" if cand else ""
            print(f"     {label:<44} {1e6 * sec:8.1f} us/walk, {nmap:3d} mappings, "
                  f"{cand_s}{per_cand}")
    print("   growth (time per walk):")
    for a, b in zip(depths, depths[1:]):
        x = b / a
        parts = []
        for i, short in ((0, "page 0"), (1, "mid-chain copy"), (3, "p0's original")):
            r = rows[b]["walks"][i][1] / rows[a]["walks"][i][1]
            parts.append(f"{short} x{r:.1f} ({_growth(x, r)})")
        bld = rows[b]["build"] / rows[a]["build"]
        mem = rows[b]["peak"] / rows[a]["peak"]
        print(f"     x{x:g} forks ({a} -> {b}): " + ", ".join(parts))
        lf = rows[b]["late_fork"] / rows[a]["late_fork"]
        print(f"       build x{bld:.1f} ({_growth(x, bld)}), build peak memory x{mem:.1f} "
              f"({_growth(x, mem)}), one fork at the end of the chain x{lf:.2f}")
    return {"rows": rows, "validated": validated}


# -- main ---------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smaller run (a few seconds): N up to 10,000, fewer walks")
    ap.add_argument("--reps", type=int, default=None,
                    help="fork cycles per N <= 10,000 (default 7; 5 with --quick)")
    ap.add_argument("--large-reps", type=int, default=3,
                    help="fork cycles for N = 100,000 (default 3)")
    ap.add_argument("--pages", type=int, default=128,
                    help="pages p0 writes before the chain of forks (default 128)")
    ap.add_argument("--depths", type=str, default=None,
                    help="chain lengths for part 2, comma-separated (default 10,50,100)")
    ap.add_argument("--loops", type=int, default=None,
                    help="walks per timed batch in part 2 (default 200; 100 with --quick)")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (5 if args.quick else 7)
    loops = args.loops if args.loops is not None else (100 if args.quick else 200)
    if reps < 1 or args.large_reps < 1 or loops < 1 or args.pages < 2:
        ap.error("--reps, --large-reps and --loops must be at least 1, --pages at least 2")
    sizes = tuple(n for n in FORK_SIZES if not args.quick or n <= 10000)
    try:
        depths = (tuple(sorted({int(d) for d in args.depths.split(",")})) if args.depths
                  else CHAIN_DEPTHS)
    except ValueError:
        ap.error("--depths takes comma-separated integers, e.g. 10,50,100")
    if min(depths) < 1:
        ap.error("--depths must be at least 1")

    t_start = time.perf_counter()
    print(f"vmwidgets {vw.__version__}, Python {sys.version.split()[0]}, "
          f"{os.uname().sysname} {os.uname().release} {os.uname().machine}")
    print()
    p1 = part1(sizes, reps, args.large_reps, validate_small=True)
    p2 = part2(depths, args.pages, loops, 7, 5, validate_small=True)
    total = time.perf_counter() - t_start

    print()
    valid_all = p1["validated"].startswith("ok") and p2["validated"].startswith("ok")
    print(f"validate: {'ok' if valid_all else 'FAILED'}")
    print(f"   fork: {p1['validated']}")
    print(f"   rmap: {p2['validated']}")

    print()
    print("== Summary")
    rows = p1["rows"]
    for n, r in rows.items():
        print(f"   fork, {n:>7,} touched pages: {1e3 * r['fork']:8.1f} ms "
              f"({1e6 * r['fork'] / n:.2f} us/page best, gc off {1e6 * r['fork_nogc'] / n:.2f}), "
              f"peak {_fmt_bytes(r['peak'])} ({r['peak'] / n:.0f} B/page); "
              f"touch {1e6 * r['touch'] / n:.1f} us/page")
    lo, hi = min(rows), max(rows)
    if lo != hi:
        x = hi / lo
        t = rows[hi]["fork"] / rows[lo]["fork"]
        tn = rows[hi]["fork_nogc"] / rows[lo]["fork_nogc"]
        mem = rows[hi]["peak"] / rows[lo]["peak"]
        print(f"   fork growth {lo:,} -> {hi:,} pages (x{x:g}): x{t:.1f} time ({_growth(x, t)}; "
              f"gc off x{tn:.1f}), x{mem:.1f} memory ({_growth(x, mem)})")
    deep = max(p2["rows"])
    r = p2["rows"][deep]
    for label, sec, nmap, cand in r["walks"]:
        print(f"   rmap walk, chain of {deep}: {label}: {1e6 * sec:.1f} us, {nmap} mappings"
              + (f" of {cand} VMAs checked" if cand is not None else ""))
    print(f"   chain of {deep} forks: build {r['build']:.3f} s, peak memory "
          f"{_fmt_bytes(r['peak'])}")
    shallow = min(p2["rows"])
    if shallow != deep:
        x = deep / shallow
        w = r["walks"][0][1] / p2["rows"][shallow]["walks"][0][1]
        b = r["build"] / p2["rows"][shallow]["build"]
        print(f"   chain {shallow} -> {deep} forks (x{x:g}): walk of page 0 x{w:.1f} "
              f"({_growth(x, w)}), build x{b:.1f} ({_growth(x, b)})")
    print(f"   validate: {'ok' if valid_all else 'FAILED'}")
    print(f"   total time: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
