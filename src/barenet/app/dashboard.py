"""`barenet dashboard RUNS_DIR`: the runs in a directory, finished and training, with curves that
update while they train (the page polls a JSON API); `barenet train --live` starts it beside a run.

Reads only what runs write (config.json, history.json, progress.json, metrics.json), and serves
no file but a listed run's report.html: nothing outside RUNS_DIR is reachable. Loopback only by
default.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from urllib.parse import quote

import click
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse

from .progress import HISTORY_FILE, PROGRESS_FILE
from .rundir import CHECKPOINT_FILE, MODEL_FILE

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
RUN_FILES = ("config.json", HISTORY_FILE, PROGRESS_FILE, MODEL_FILE, CHECKPOINT_FILE)
# A progress file not rewritten for this long belongs to a run that stopped (killed, machine
# down). On the writer's machine a dead pid says so at once; a live one is trusted this long.
STALE_SECONDS = 120.0
SWEEP_REPORT = "sweep-report.html"      # barenet sweep-report's page, in the sweep directory
ALIVE_PID_SECONDS = 1800.0
MAX_RUNS = 2000
SCHEMA_VERSION = 1


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _number(value, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) else default


def is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_FILES)


def find_runs(root: Path) -> list[Path]:
    """Run directories in `root`: itself, its children, and their children (a sweep's
    trial-NNNN, a multi-seed run's seed-K). Symlinks leading outside `root` are left out."""
    base = root.resolve()
    found = []
    if is_run(root):
        found.append(root)
    for child in sorted(_subdirs(root)):
        if is_run(child):
            found.append(child)
        else:
            found.extend(g for g in sorted(_subdirs(child)) if is_run(g))
        if len(found) >= MAX_RUNS:
            break
    return [p for p in found[:MAX_RUNS] if p.resolve().is_relative_to(base)]


def _subdirs(path: Path):
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def run_state(run: Path, now: float | None = None) -> tuple[str, str | None, dict | None]:
    """(status, phase, progress): status is running, finished or interrupted; phase (while
    running) starting, training or evaluating; progress the run's progress.json, if any."""
    now = time.time() if now is None else now
    if (run / MODEL_FILE).is_file():
        return "finished", None, None
    progress = _read_json(run / PROGRESS_FILE)
    if isinstance(progress, dict):
        if progress.get("state") == "interrupted":
            return "interrupted", None, progress
        age = now - _number(progress.get("updated"))
        pid = progress.get("pid")
        if progress.get("host") == platform.node() and isinstance(pid, int):
            alive = _pid_alive(pid) and age < ALIVE_PID_SECONDS
        else:
            alive = age < STALE_SECONDS
        if alive:
            return "running", progress.get("state") or "training", progress
        return "interrupted", None, progress
    if (run / CHECKPOINT_FILE).is_file() or (run / HISTORY_FILE).is_file():
        return "interrupted", None, None
    written = _mtime(run / "config.json")   # config.json only: loading data, or died doing so
    if written is not None and now - written < STALE_SECONDS:
        return "running", "starting", None
    return "interrupted", None, None


def describe(config: dict | None) -> str:
    """One line on what a run trains, from its config.json."""
    if not isinstance(config, dict) or not config:
        return ""
    model, opt = config.get("model") or {}, config.get("optimizer") or {}
    training = config.get("training") or {}
    if model.get("layers"):
        kinds = [str(layer.get("type", "?")) for layer in model["layers"]]
        convs = sum(k.startswith("Conv") for k in kinds)
        net = f"{len(kinds)} layers" + (f" ({convs} conv)" if convs else "")
    else:
        net = "-".join(str(n) for n in ["784", *model.get("hidden", []), "10"])
        net += f" {model.get('activation', '')}".rstrip()
    parts = [(config.get("data") or {}).get("dataset", ""), net,
             f"{opt.get('name', '?')} lr {opt.get('lr', '?')}",
             f"batch {training.get('batch_size', '?')}"]
    return ", ".join(p for p in parts if p)


class RunsView:
    """What the API answers, read from disk on each request (files parsed once per change)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[Path, tuple[tuple[int, int], object]] = {}
        self._lock = threading.Lock()

    def _cached_json(self, path: Path):
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
            if hit and hit[0] == key:
                return hit[1]
        value = _read_json(path)
        with self._lock:
            self._cache[path] = (key, value)
        return value

    def run_id(self, run: Path) -> str:
        """The run's path relative to RUNS_DIR ("." for RUNS_DIR itself): its name in the API."""
        return run.relative_to(self.root).as_posix()

    def lookup(self, run_id: str) -> Path:
        """The run directory named `run_id`, only if it is one the listing shows (404 else)."""
        for run in find_runs(self.root):
            if self.run_id(run) == run_id:
                return run
        raise HTTPException(404, f"no run {run_id!r} in this directory")

    def summary(self, run: Path, now: float, *, history: bool = False) -> dict:
        """What the runs table shows of `run` (and its whole history for the charts)."""
        status, phase, progress = run_state(run, now)
        rows = self._cached_json(run / HISTORY_FILE)
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        config = self._cached_json(run / "config.json")
        config = config if isinstance(config, dict) else {}
        metrics = self._cached_json(run / "metrics.json") if status == "finished" else None
        metrics = metrics if isinstance(metrics, dict) else {}
        epochs = (config.get("training") or {}).get("epochs")
        run_id = self.run_id(run)
        parent = Path(run_id).parent.as_posix()
        shown_progress = None
        if progress is not None:
            age = max(now - _number(progress.get("updated"), now), 0.0)
            eta = progress.get("eta")
            shown_progress = {
                "epoch": progress.get("epoch"), "epochs": progress.get("epochs"),
                "batch": progress.get("batch"), "batches": progress.get("batches"),
                "loss": progress.get("loss"), "elapsed": progress.get("elapsed"),
                "eta": None if eta is None or status != "running" else max(eta - age, 0.0),
                "age": round(age, 1), "reason": progress.get("reason")}
        val_key = "val_accuracy" if rows and "val_accuracy" in rows[-1] else "accuracy"
        out = {
            "id": run_id, "name": run.name if run_id != "." else self.root.resolve().name,
            "path": str(run),
            "group": None if parent == "." else parent,
            "status": status, "phase": phase, "progress": shown_progress,
            "epochs": epochs or (progress or {}).get("epochs"), "epochs_done": len(rows),
            "description": describe(config), "last": rows[-1] if rows else None,
            "best_val_accuracy": max((r[val_key] for r in rows if val_key in r), default=None),
            "curve_key": val_key, "curve": [r.get(val_key) for r in rows],
            "test_accuracy": metrics.get("test_accuracy"),
            "updated": max(filter(None, (_mtime(run / n) for n in RUN_FILES)), default=None),
            "report": f"/report?run={quote(run_id, safe='/')}"
            if (run / "report.html").is_file() else None,
        }
        if history:
            out["history"] = rows
        return out

    def group_report(self, group: str) -> Path:
        """The sweep report of `group` (a directory holding listed runs), 404 if none."""
        groups = {Path(self.run_id(run)).parent.as_posix() for run in find_runs(self.root)}
        path = self.root / group / SWEEP_REPORT
        if group in groups - {"."} and path.is_file():
            return path
        raise HTTPException(404, f"no sweep report for {group!r} in this directory")

    def listing(self) -> dict:
        now = time.time()
        runs = [self.summary(run, now) for run in find_runs(self.root)]
        order = {"running": 0, "interrupted": 1, "finished": 1}
        runs.sort(key=lambda r: (order[r["status"]], -(r["updated"] or 0)))
        groups = sorted({r["group"] for r in runs if r["group"]})
        return {"version": SCHEMA_VERSION, "root": str(self.root), "now": now,
                "poll_seconds": 2, "runs": runs,
                "groups": [{"id": g, "report": f"/sweep-report?group={quote(g, safe='/')}"
                            if (self.root / g / SWEEP_REPORT).is_file() else None}
                           for g in groups]}


def create_app(root: Path) -> FastAPI:
    view = RunsView(root)
    app = FastAPI(title="barenet dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "dashboard.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in PAGE_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name],
                            headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs")
    def runs():
        return JSONResponse(view.listing(), headers={"Cache-Control": "no-store"})

    @app.get("/api/run")
    def run(run: str = Query(..., max_length=1000)):
        summary = view.summary(view.lookup(run), time.time(), history=True)
        return JSONResponse(summary, headers={"Cache-Control": "no-store"})

    @app.get("/report")
    def report(run: str = Query(..., max_length=1000)):
        path = view.lookup(run) / "report.html"
        if not path.is_file():
            raise HTTPException(404, f"run {run!r} has no report.html yet")
        return FileResponse(path, media_type="text/html")

    @app.get("/sweep-report")
    def sweep_report(group: str = Query(..., max_length=1000)):
        return FileResponse(view.group_report(group), media_type="text/html")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    return app


def _server(app, sock):
    from .serving import uvicorn_server  # idle or slow clients cannot deny service
    return uvicorn_server(app)


def _url(host: str, sock) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{sock.getsockname()[1]}/"


def start_in_background(root: Path, host: str = "127.0.0.1", port: int = 0):
    """Serve the dashboard of `root` from a daemon thread (it ends with the process); returns
    its URL and the uvicorn server (server.should_exit = True stops it)."""
    from .asgi import bind
    sock = bind(host, port)
    server = _server(create_app(Path(root)), sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="barenet-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return _url(host, sock), server


def open_in_browser(url: str) -> bool:
    """Open `url` in a graphical browser if there is one; never blocks on a terminal browser,
    never raises. True when a browser was asked to open it."""
    import sys
    import webbrowser
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
        if type(browser) is webbrowser.GenericBrowser:    # lynx, w3m: would take the terminal
            return False
        return bool(browser.open(url))
    except (webbrowser.Error, OSError):
        return False


@click.command("dashboard")
@click.argument("runs_dir", default="runs", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback by default: only this machine).")
@click.option("--port", default=8050, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in a web browser.")
def command(runs_dir, host, port, open_page):
    """Watch the runs in RUNS_DIR (default: runs) train: curves, progress, ETA, reports.

    Finished, running and interrupted runs are listed, with sweep trials and multi-seed runs
    one level deeper; the page updates every 2 s while runs train.
    """
    from .asgi import bind, is_loopback
    from .common import Failure

    root = Path(runs_dir)
    if not root.is_dir():
        raise Failure(f"{runs_dir}: no such directory (give the directory your runs are in, "
                      f"e.g. runs)")
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise Failure(str(exc), 1) from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: other machines can reach this page",
                   err=True)
    url = _url(host, sock)
    click.echo(f"barenet dashboard: {url}  (runs in {root}; Ctrl-C stops)")
    import sys
    sys.stdout.flush()
    if open_page:
        open_in_browser(url)
    _server(create_app(root), sock).run(sockets=[sock])
    return 0
