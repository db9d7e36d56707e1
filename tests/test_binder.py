"""Binder: what binder/ asks for is complete, and it really runs the lessons.

repo2docker (what Binder builds with) needs a Docker engine, which this machine does not
have, so the last test does what repo2docker's Python build pack does, minus the image:
a fresh virtual environment with the Python of ``binder/runtime.txt``, ``pip install -r
binder/requirements.txt``, then ``binder/postBuild`` run from a copy of the repository,
and a lesson run top to bottom in it with ``jupyter nbconvert --execute``; its outputs
must equal the saved ones (after the sanitizing nbval applies in ``make test``).
"""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

#: The lessons the fresh environment runs: widgets, exercises and the Explorer.
BINDER_LESSONS = ["01_address_space.ipynb"]


def _pins(repo_root):
    pins = {}
    for line in (repo_root / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{line!r} is not pinned with =="
            pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def _pyproject(repo_root):
    return tomllib.loads((repo_root / "pyproject.toml").read_text())


def test_runtime_python_is_one_vmwidgets_supports(repo_root):
    text = (repo_root / "binder" / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+)\.(\d+)", text)
    assert match, f"binder/runtime.txt must read like 'python-3.11', not {text!r}"
    version = f"{match.group(1)}.{match.group(2)}"
    assert version in SpecifierSet(_pyproject(repo_root)["project"]["requires-python"])


def test_every_dependency_is_pinned_within_its_range(repo_root):
    pins = _pins(repo_root)
    needed = _pyproject(repo_root)["project"]["dependencies"] + ["jupyterlab", "ipykernel"]
    for line in needed:
        req = Requirement(line)
        key = canonicalize_name(req.name)
        assert key in pins, f"binder/requirements.txt does not pin {req.name}"
        assert pins[key] in req.specifier, f"{req.name}=={pins[key]} is outside {req.specifier}"
    # The JupyterLab front end of ipywidgets must come with it, or widgets do not render.
    assert "jupyterlab-widgets" in pins


def test_postbuild_installs_vmwidgets(repo_root):
    post = repo_root / "binder" / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    assert "pip install --no-deps ." in post.read_text()


def test_readme_links_to_binder_on_the_lessons(repo_root):
    readme = (repo_root / "README.md").read_text()
    links = re.findall(r"https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/\w+\?urlpath=[^)\s]+", readme)
    assert links, "README.md has no Binder launch link"
    for link in links:
        target = link.split("urlpath=")[1].removeprefix("lab/tree/")
        assert target.startswith("lessons/"), link
        assert (repo_root / target).exists(), f"{link} opens {target}, which does not exist"


def _sanitizers(repo_root):
    cfg = configparser.ConfigParser()
    cfg.read(repo_root / "lessons" / "nbval_sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def _outputs(nb, sanitizers):
    """Per code cell, its text outputs (streams, text/plain, errors) after sanitizing."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type == "error":
                texts.append(f"ERROR {out.ename}: {out.evalue}")
            elif "text/plain" in out.get("data", {}):
                texts.append(out["data"]["text/plain"])
        text = "".join(texts)
        for regex, replace in sanitizers:
            text = regex.sub(replace, text)
        cells.append(text)
    return cells


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_binder_environment_runs_a_lesson(repo_root, tmp_path):
    runtime = (repo_root / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    python = shutil.which(f"python{runtime}")
    if python is None and f"{sys.version_info.major}.{sys.version_info.minor}" == runtime:
        python = sys.executable
    if python is None:
        pytest.skip(f"no Python {runtime} here to build the Binder environment with")
    # A copy of the repository as Binder checks it out: the files git tracks, as they are now.
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo_root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    repo = tmp_path / "repo"
    for name in filter(None, files):
        if (repo_root / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, repo / name)
    venv = tmp_path / "venv"
    # A venv made from another venv's python would point at that venv; build from the base.
    base = subprocess.run([python, "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    base_python = os.path.join(base, "bin", f"python{runtime}")
    subprocess.run([base_python if os.path.exists(base_python) else python, "-m", "venv", venv],
                   check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)

    def run(*cmd, cwd=repo):
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run("python", "-m", "pip", "install", "-q", "-r", "binder/requirements.txt")
    run("bash", "binder/postBuild")
    run("python", "-m", "pip", "check")
    where = run("python", "-c", "import vmwidgets, sys; print(vmwidgets.__file__, sys.prefix)",
                cwd=tmp_path)
    assert str(venv) in where and "site-packages" in where, where
    listing = subprocess.run(["jupyter", "labextension", "list"], cwd=repo, env=env,
                             capture_output=True, text=True)
    extensions = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)  # no colours
    assert re.search(r"@jupyter-widgets/jupyterlab-manager v\S+ enabled\s+OK", extensions), extensions

    sanitizers = _sanitizers(repo_root)
    for lesson in BINDER_LESSONS:
        run("jupyter", "nbconvert", "--to", "notebook", "--execute",
            "--ExecutePreprocessor.timeout=120", "--output-dir", str(tmp_path / "out"),
            f"lessons/{lesson}")
        ran = nbformat.read(tmp_path / "out" / lesson, as_version=4)
        saved = nbformat.read(repo_root / "lessons" / lesson, as_version=4)
        assert _outputs(ran, sanitizers) == _outputs(saved, sanitizers), (
            f"{lesson} printed something else in the Binder environment")
