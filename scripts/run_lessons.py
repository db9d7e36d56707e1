"""Run lesson notebooks top to bottom and save their outputs in place.

    .venv/bin/python scripts/run_lessons.py                 # every lessons/*.ipynb
    .venv/bin/python scripts/run_lessons.py lessons/03_*.ipynb

The outputs saved are the ones nbval compares in `make test`, so run this after changing
a lesson (or anything the lessons print) and commit the notebooks. Each notebook runs in a
fresh kernel of this Python, from the lessons/ folder, as JupyterLab would run it; the
time each took is printed. Widget state is not saved (a lesson rebuilds its widgets
when run), and neither are the views' references to it (random model ids): a saved
widget output keeps its text/plain, the widget's ``text()``, which is what a reader of
the saved file sees and what nbval compares. So the files stay small, and running an
unchanged lesson again changes nothing.
"""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def execute(path, timeout=120):
    """Run notebook ``path`` in a fresh kernel; return the notebook with its new outputs
    (the file is not changed) and the seconds it took, kernel start included."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def _merge_streams(outputs):
    """Join consecutive pieces of one stream: how a cell's printing is cut into pieces
    depends on timing, so a saved file would change from run to run without this."""
    merged = []
    for out in outputs:
        if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def run(path, timeout=120):
    """Execute ``path`` and save its outputs in place; return the seconds it took."""
    nb, took = execute(path, timeout)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET_VIEW, None)
    nbformat.write(nb, path)
    return took


def main(argv):
    paths = [Path(a) for a in argv] or sorted(LESSONS.glob("*.ipynb"))
    for path in paths:
        print(f"{path}: {run(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
