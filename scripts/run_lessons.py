"""Run lesson notebooks top to bottom and save their outputs in place.

    .venv/bin/python scripts/run_lessons.py                 # every lessons/*.ipynb
    .venv/bin/python scripts/run_lessons.py lessons/03_*.ipynb

The outputs saved are the ones nbval compares in `make test`, so run this after changing
a lesson (or anything the lessons print) and commit the notebooks. Each notebook runs in a
fresh kernel of this Python, from the lessons/ folder, as JupyterLab would run it; the
time each took is printed. Widget state is not saved (a lesson rebuilds its widgets
when run), so the files stay small and diffs readable.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def run(path, timeout=120):
    """Execute ``path`` in place; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    t0 = time.perf_counter()
    client.execute()
    took = time.perf_counter() - t0
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return took


def main(argv):
    paths = [Path(a) for a in argv] or sorted(LESSONS.glob("*.ipynb"))
    for path in paths:
        print(f"{path}: {run(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
