"""How long each lesson takes to run top to bottom (the target: under 60 s each).

    python benchmarks/bench_lessons.py            # every lessons/*.ipynb, 1 run each
    python benchmarks/bench_lessons.py --reps 3   # median of 3 runs

Each notebook runs in a fresh kernel, as a student's "Run All" would, through the same
code that saves the lessons' outputs (scripts/run_lessons.py), without writing the file.
The time includes starting the kernel; the kernel start alone is timed on an empty
notebook and printed first, so the lesson's own cost is the difference.
"""

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_lessons", ROOT / "scripts" / "run_lessons.py")
run_lessons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_lessons)


def timed(path, reps):
    return statistics.median(run_lessons.execute(path)[1] for _ in range(reps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="runs per lesson (median shown)")
    parser.add_argument("lessons", nargs="*", type=Path, help="notebooks (default: all)")
    args = parser.parse_args()
    paths = args.lessons or sorted((ROOT / "lessons").glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.ipynb"
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("1")]
        nbformat.write(nb, empty)
        start = timed(empty, args.reps)
    print(f"{'kernel start (1-cell notebook)':40s} {start:6.1f} s")
    worst = 0.0
    for path in paths:
        took = timed(path, args.reps)
        worst = max(worst, took)
        print(f"{path.name:40s} {took:6.1f} s   (lesson alone: {took - start:5.1f} s)", flush=True)
    print(f"slowest lesson: {worst:.1f} s (target: under 60 s)")


if __name__ == "__main__":
    main()
