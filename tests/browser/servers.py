"""Start a real Jupyter server (JupyterLab + Notebook 7 + Voila extensions) on loopback.

Used by the browser tests' fixtures and by ``benchmarks/bench_widgets.py``. One server
serves JupyterLab (``/lab/tree/NB``), Notebook 7 (``/notebooks/NB``) and Voila
(``/voila/render/NB``): they are all extensions of the same jupyter_server.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT = 90  # seconds


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root_dir (a copy of the source directory)
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def jupyter_server(source: Path, workdir: Path, log: Path):
    """Serve a copy of the notebooks in ``source`` (outputs cleared) from ``workdir``."""
    root = workdir / "root"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # Notebooks may be committed with their outputs (nbval compares them); a browser test
    # must see outputs appear from its own run, so the copy starts with none.
    for nb_path in root.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb_path.write_text(json.dumps(nb, indent=1))
    port, token = free_port(), secrets.token_hex(16)
    # Keep Jupyter's config, settings and workspaces out of the user's home,
    # so the test always sees a pristine JupyterLab.
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ]:
        env[var] = str(workdir / sub)
    # Do not ask "Would you like to get notified about official Jupyter news?":
    # the toast covers the screenshot and the answer would fetch from the web.
    settings = workdir / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # Notebook 7's lab extension fails to load in Voila's page (a module federation
    # error) and is of no use there. (Voila needs both lists set, even if one is empty.)
    config = workdir / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "jupyter_server_config.json").write_text(json.dumps({"VoilaConfiguration": {
        "extension_denylist": ["@jupyter-notebook/lab-extension"], "extension_allowlist": []}}))
    # The kernel must import this checkout's vmwidgets even if not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--allow-root",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise ServerError(f"Jupyter exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"Jupyter did not answer within {SERVER_START_TIMEOUT}s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        # SIGTERM lets Jupyter shut its kernels down; then make sure the whole
        # process group we started (server + kernels) is gone.
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
