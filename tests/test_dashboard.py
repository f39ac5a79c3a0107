"""The live training view without a browser: the files a run writes while it trains
(history.json every epoch, progress.json during one), the states read from them, the JSON API of
`barenet dashboard` and its limits (only RUNS_DIR's reports), `train --live`; and the menu.

The page itself, against a real training run, is tested in test_browser_dashboard.py.
"""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from barenet.app.cli import main
from barenet.app.progress import LiveFiles
from barenet.training import Callback

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from barenet.app.dashboard import create_app, find_runs, run_state  # noqa: E402

TRAIN = ["--set", "model.hidden=[8]", "-q"]


def train(out: Path, epochs: int = 2, *extra: str) -> int:
    return main(["train", "--epochs", str(epochs), "--out", str(out), *TRAIN, *extra])


class Watch(Callback):
    """Reads the run directory as the dashboard would, at the end of every epoch."""

    def __init__(self, out: Path, stop_after: int | None = None):
        self.out, self.stop_after, self.seen = out, stop_after, []

    def on_epoch_end(self, epoch, logs):
        history = json.loads((self.out / "history.json").read_text())
        progress = json.loads((self.out / "progress.json").read_text())
        self.seen.append((len(history), progress["epoch"], progress["state"]))
        if self.stop_after is not None and epoch + 1 == self.stop_after:
            raise KeyboardInterrupt


def test_history_is_on_disk_after_every_epoch(tiny_data, tmp_path):
    from barenet.app.runs import train_run
    from barenet.config import load_config

    out = tmp_path / "run"
    watch = Watch(out)
    train_run(load_config(None, ["training.epochs=3", "model.hidden=[8]"]), out,
              callbacks=[watch], progress=False)
    assert watch.seen == [(1, 1, "training"), (2, 2, "training"), (3, 3, "training")]
    assert not (out / "progress.json").exists()               # gone once the model is saved
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert not list(out.glob(".*.tmp"))                       # atomic writes leave no temp file
    assert run_state(out)[0] == "finished"


def test_an_interrupted_run_keeps_its_history_and_says_so(tiny_data, tmp_path):
    from barenet.app.runs import train_run
    from barenet.config import load_config

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(load_config(None, ["training.epochs=5", "model.hidden=[8]"]), out,
                  callbacks=[Watch(out, stop_after=2)], progress=False)
    assert len(json.loads((out / "history.json").read_text())) == 2
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["reason"] == "interrupted"
    assert run_state(out)[0] == "interrupted"


class FakeState:
    epoch = 0

    class history:
        rows = []


def test_progress_file_schema_and_eta(tmp_path):
    live = LiveFiles(tmp_path, epochs=4, interval=0.0)
    live.on_train_begin(FakeState)
    first = json.loads((tmp_path / "progress.json").read_text())
    assert first["state"] == "training" and first["epoch"] == 1 and first["batch"] == 0
    time.sleep(0.2)                          # the 10 batches below: ~20 ms each
    for b in range(10):
        live.on_batch_end(b, {"loss": 2.0 - 0.1 * b, "batch": b, "batches": 40})
    p = json.loads((tmp_path / "progress.json").read_text())
    assert set(p) == {"state", "epoch", "epochs", "batch", "batches", "loss", "elapsed", "eta",
                      "updated", "pid", "host"}
    assert (p["epoch"], p["epochs"], p["batch"], p["batches"]) == (1, 4, 10, 40)
    assert p["loss"] == pytest.approx(sum(2.0 - 0.1 * b for b in range(10)) / 10)
    # 30 batches left in this epoch, then 3 epochs of 40: 150 batches at the pace so far.
    assert p["eta"] == pytest.approx(15 * p["elapsed"], rel=0.1)
    assert p["pid"] == os.getpid() and p["host"] == platform.node()
    assert abs(p["updated"] - time.time()) < 5


def test_progress_is_throttled(tmp_path, monkeypatch):
    writes = []
    live = LiveFiles(tmp_path, epochs=1, interval=1.0)
    live.on_train_begin(FakeState)
    monkeypatch.setattr(live, "write", lambda *a, **k: writes.append(k))
    for b in range(1000):                    # a fast epoch: 1000 batches well within a second
        live.on_batch_end(b, {"loss": 1.0, "batch": b, "batches": 1000})
    assert len(writes) <= 1


def test_live_files_never_stop_training(tmp_path):
    live = LiveFiles(tmp_path / "gone", epochs=2, interval=0.0)     # the directory is missing
    live.on_train_begin(FakeState)
    live.on_batch_end(0, {"loss": 1.0, "batch": 0, "batches": 1})
    live.on_epoch_end(0, {"loss": 1.0})
    live.on_train_end(FakeState)
    live.stopped("interrupted")
    assert not (tmp_path / "gone").exists()


def write_progress(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text("{}")
    progress = {"state": "training", "epoch": 2, "epochs": 5, "batch": 10, "batches": 100,
                "loss": 0.5, "elapsed": 3.0, "eta": 40.0, "updated": time.time(),
                "pid": os.getpid(), "host": platform.node()}
    (run / "progress.json").write_text(json.dumps({**progress, **fields}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_stale_and_finished_states(tmp_path):
    write_progress(tmp_path / "alive")
    assert run_state(tmp_path / "alive")[:2] == ("running", "training")
    write_progress(tmp_path / "killed", pid=dead_pid())                 # kill -9: pid gone
    assert run_state(tmp_path / "killed")[0] == "interrupted"
    write_progress(tmp_path / "elsewhere", host="another-machine", updated=time.time() - 3600)
    assert run_state(tmp_path / "elsewhere")[0] == "interrupted"       # stale file
    write_progress(tmp_path / "remote", host="another-machine")
    assert run_state(tmp_path / "remote")[0] == "running"              # fresh file
    write_progress(tmp_path / "done")
    (tmp_path / "done" / "model.safetensors").write_bytes(b"")
    assert run_state(tmp_path / "done")[0] == "finished"
    (tmp_path / "loading").mkdir()
    (tmp_path / "loading" / "config.json").write_text("{}")
    assert run_state(tmp_path / "loading")[:2] == ("running", "starting")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A finished run with a report, a sweep of two trials, one interrupted run, one running."""
    import barenet.data
    from conftest import synthetic_digits

    root = tmp_path_factory.mktemp("dash") / "runs"
    data = synthetic_digits()
    with pytest.MonkeyPatch.context() as mp:     # tiny_data and no report, for this module
        mp.setattr(barenet.data, "load_dataset", lambda *a, **k: data)
        mp.setattr("barenet.app.runs._write_report", lambda out: None)
        assert train(root / "finished") == 0
        for k in range(2):
            assert train(root / "sweep-x" / f"trial-{k:04d}", 1 + k) == 0
    (root / "finished" / "report.html").write_text("<html>the report</html>")
    (root / "sweep-x" / "study.db").write_bytes(b"")
    (root / "sweep-x" / "sweep-report.html").write_text("<html>the sweep</html>")
    write_progress(root / "killed", pid=dead_pid())
    (root / "killed" / "history.json").write_text(json.dumps([{"epoch": 1, "loss": 1.0,
                                                                "accuracy": 0.5}]))
    write_progress(root / "training")
    return root


@pytest.fixture
def client(runs_dir):
    with TestClient(create_app(runs_dir)) as c:
        c.app_root = runs_dir
        yield c


# The schema of /api/runs: key -> accepted types (None: null allowed).
RUN_SCHEMA = {"id": (str,), "name": (str,), "path": (str,), "group": (str, None), "status": (str,),
              "phase": (str, None), "progress": (dict, None), "epochs": (int, None),
              "epochs_done": (int,), "description": (str,), "last": (dict, None),
              "best_val_accuracy": (float, None), "curve_key": (str,), "curve": (list,),
              "test_accuracy": (float, None), "updated": (float, None), "report": (str, None)}
PROGRESS_SCHEMA = {"epoch", "epochs", "batch", "batches", "loss", "elapsed", "eta", "age",
                   "reason"}


def conforms(value, types) -> bool:
    return any(value is None if t is None else isinstance(value, t) for t in types)


def test_api_lists_every_run_with_its_state(client):
    body = client.get("/api/runs").json()
    assert body["version"] == 1 and body["poll_seconds"] == 2
    assert body["groups"] == [{"id": "sweep-x", "report": "/sweep-report?group=sweep-x"}]
    runs = {r["id"]: r for r in body["runs"]}
    assert set(runs) == {"finished", "sweep-x/trial-0000", "sweep-x/trial-0001", "killed",
                         "training"}
    for run in body["runs"]:
        assert set(run) == set(RUN_SCHEMA), run["id"]
        for key, types in RUN_SCHEMA.items():
            assert conforms(run[key], types), (run["id"], key, run[key])
        assert run["status"] in ("running", "finished", "interrupted")
        if run["progress"] is not None:
            assert set(run["progress"]) == PROGRESS_SCHEMA
    assert body["runs"][0]["id"] == "training"                  # running runs come first
    assert runs["training"]["status"] == "running"
    assert runs["training"]["progress"]["eta"] <= 40.0
    assert runs["killed"]["status"] == "interrupted" and runs["killed"]["epochs_done"] == 1
    assert runs["killed"]["path"] == str(client.app_root / "killed")
    assert runs["finished"]["status"] == "finished"
    assert runs["finished"]["report"] == "/report?run=finished"
    assert runs["finished"]["epochs_done"] == 2 and len(runs["finished"]["curve"]) == 2
    assert 0 < runs["finished"]["test_accuracy"] <= 1
    assert runs["sweep-x/trial-0001"]["group"] == "sweep-x"
    assert runs["sweep-x/trial-0001"]["epochs_done"] == 2
    assert runs["sweep-x/trial-0000"]["report"] is None
    assert "784-8-10" in runs["finished"]["description"]


def test_api_run_has_the_history(client, runs_dir):
    body = client.get("/api/run", params={"run": "sweep-x/trial-0001"}).json()
    assert body["history"] == json.loads((runs_dir / "sweep-x" / "trial-0001" /
                                          "history.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(body["history"][0])


def test_page_and_report_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/dashboard.js"' in page.text
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    report = client.get("/report", params={"run": "finished"})
    assert report.status_code == 200 and report.text == "<html>the report</html>"
    assert client.get("/report", params={"run": "killed"}).status_code == 404
    sweep = client.get("/sweep-report", params={"group": "sweep-x"})
    assert sweep.status_code == 200 and sweep.text == "<html>the sweep</html>"


@pytest.mark.parametrize("run", ["..", "../..", "/etc", "finished/../../..", "sweep-x",
                                 "finished/report.html", "nowhere", "", ".",
                                 "sweep-x/../sweep-x"])
def test_nothing_outside_the_listed_runs(client, run):
    for url, key in (("/api/run", "run"), ("/report", "run"), ("/sweep-report", "group")):
        if (url, run) == ("/sweep-report", "sweep-x"):
            continue                                      # a listed sweep: tested above
        response = client.get(url, params={key: run})
        assert response.status_code in (404, 422), (url, run)
        assert "error" in response.json() or "detail" in response.json()


@pytest.mark.parametrize("path", ["/static/../dashboard.py", "/static/style.css",
                                  "/static/dashboard.html", "/static/%2e%2e%2fdashboard.py",
                                  "/finished/report.html", "/runs/finished/config.json"])
def test_no_other_files(client, path):
    assert client.get(path).status_code == 404


def test_a_symlink_out_of_runs_dir_is_not_listed(tmp_path):
    outside = tmp_path / "outside"
    write_progress(outside)
    root = tmp_path / "runs"
    write_progress(root / "mine")
    (root / "link").symlink_to(outside)
    assert find_runs(root) == [root / "mine"]
    with TestClient(create_app(root)) as c:
        assert c.get("/api/run", params={"run": "link"}).status_code == 404


def test_broken_files_and_odd_names(tmp_path):
    root = tmp_path / "runs"
    for name, files in {"half written": {"history.json": "[1, 2", "config.json": "[]"},
                        "odd #1 & ?": {"config.json": "{}", "model.safetensors": "",
                                       "report.html": "<html>odd</html>"},
                        "garbage": {"progress.json": '{"updated": "x", "pid": "y"}',
                                    "history.json": '[{"epoch": 1}, 3]'}}.items():
        (root / name).mkdir(parents=True)
        for file, text in files.items():
            (root / name / file).write_text(text)
    with TestClient(create_app(root)) as c:
        runs = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
        assert set(runs) == {"half written", "odd #1 & ?", "garbage"}
        assert runs["half written"]["status"] == "interrupted"
        assert runs["garbage"]["epochs_done"] == 1
        assert c.get(runs["odd #1 & ?"]["report"]).text == "<html>odd</html>"
        assert c.get("/api/run", params={"run": "garbage"}).status_code == 200


def test_a_run_directory_itself_is_a_root(runs_dir):
    with TestClient(create_app(runs_dir / "finished")) as c:
        (run,) = c.get("/api/runs").json()["runs"]
        assert run["id"] == "." and run["name"] == "finished"
        assert c.get("/report", params={"run": "."}).status_code == 200


def test_dashboard_command_refuses_a_missing_directory(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err and "Traceback" not in err


def test_dashboard_command_refuses_a_busy_port(tmp_path, capsys):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", str(tmp_path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen" in err


def test_train_live_serves_the_runs_parent(tiny_data, tmp_path, monkeypatch, capsys):
    import httpx

    import barenet.app.dashboard as dashboard

    servers, opened = [], []
    start = dashboard.start_in_background

    def recording_start(root, *args, **kwargs):
        url, server = start(root, *args, **kwargs)
        servers.append(server)
        return url, server

    monkeypatch.setattr(dashboard, "start_in_background", recording_start)
    monkeypatch.setattr(dashboard, "open_in_browser", opened.append)
    try:
        assert train(tmp_path / "runs" / "a", 2, "--live") == 0
        err = capsys.readouterr().err
        line = next(line for line in err.splitlines() if line.startswith("live view: "))
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:") and opened == [url]
        (run,) = httpx.get(url + "api/runs").json()["runs"]
        assert (run["id"], run["status"], run["epochs_done"]) == ("a", "finished", 2)
    finally:
        for server in servers:
            server.should_exit = True


def test_train_live_without_the_web_extra(tmp_path, monkeypatch, capsys):
    import barenet.data

    def work(*args, **kwargs):
        raise AssertionError("trained before saying the extra is missing")

    monkeypatch.setattr(barenet.data, "load_dataset", work)
    monkeypatch.setattr("barenet.app.extras.missing_packages", lambda extra: ["fastapi"])
    assert train(tmp_path / "run", 1, "--live") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'barenet[web]'" in err


def test_dashboard_without_the_web_extra(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m.split(".")[0] in ("fastapi", "uvicorn")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "barenet.app.dashboard")
    assert main(["dashboard", "--help"]) == 0
    assert "pip install 'barenet[web]'" in " ".join(capsys.readouterr().out.split())
    assert main(["dashboard", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'barenet[web]'" in err


def test_open_in_browser_never_blocks_without_a_display(monkeypatch):
    from barenet.app.dashboard import open_in_browser
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert open_in_browser("http://127.0.0.1:1/") is False


# The menu (issue 14, item 3): every action of the seed's menu, each through the CLI or shown.


def scripted_menu(answers, monkeypatch):
    """Run the menu on scripted answers; (argv lists given to cli.main, lines shown)."""
    from barenet.app.menu import run_menu
    calls, shown = [], []
    replies = iter(answers)

    def ask(prompt, default=None):                       # "" takes the default, as rich does
        answer = next(replies)
        return default if answer == "" and default is not None else answer

    assert run_menu(lambda argv: calls.append(argv) or 0, ask=ask, echo=shown.append) == 0
    return calls, shown


def test_menu_offers_everything_the_seed_menu_did(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, shown = scripted_menu(["q"], monkeypatch)
    menu = "\n".join(shown)
    for action in ("download and verify", "train a network", "evaluate", "explore",
                   "train multiple model configurations", "serve", "report", "compare runs",
                   "project information", "exit", "dashboard"):
        assert action in menu, action


def test_menu_report_compare_and_dashboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k, run in enumerate(("runs/a", "runs/sweep-x/trial-0000")):  # the trial is newer
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "model.safetensors").write_bytes(b"x")
        os.utime(tmp_path / run / "model.safetensors", (1000 + k, 1000 + k))
    calls, shown = scripted_menu(["6", "2", "7", "", "8", "", "9000", "7", "1 nowhere",
                                  "q"], monkeypatch)
    trial, a = str(Path("runs/sweep-x/trial-0000")), str(Path("runs/a"))
    assert calls == [["report", a], ["compare", trial, a],
                     ["dashboard", "runs", "--port", "9000"]]
    assert any("nowhere: no such run" in line for line in shown)


def test_menu_compare_needs_two_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls, shown = scripted_menu(["7", "", "8", "elsewhere", "q"], monkeypatch)
    assert calls == []
    assert any("at least two runs" in line for line in shown)
    assert any("elsewhere: no such directory" in line for line in shown)


def test_menu_fetches_and_verifies_the_data(tiny_data, monkeypatch):
    import barenet.data
    from barenet.data import DataError

    calls, shown = scripted_menu(["9", "", "q"], monkeypatch)
    assert calls == []
    assert any(line.startswith("mnist: 600 training and 200 test images, every file's SHA-256 "
                               "verified") for line in shown)

    def unreachable(name, *args, **kwargs):
        raise DataError(f"{name}: no source reachable")

    monkeypatch.setattr(barenet.data, "load_dataset", unreachable)
    _, shown = scripted_menu(["9", "both", "q"], monkeypatch)
    assert any("mnist: no source reachable" in line for line in shown)
    assert any("fashion-mnist: no source reachable" in line for line in shown)


def test_menu_project_information(tmp_path, monkeypatch):
    from barenet import __version__
    from barenet.app.shipped import SHIPPED, shipped_path
    from barenet.data.mnist import FILES

    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for stem in FILES:
        (data / "mnist" / stem).write_bytes(b"")
    monkeypatch.setenv("BARENET_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "model.safetensors").write_bytes(b"x")
    calls, shown = scripted_menu(["10", "q"], monkeypatch)
    info = "\n".join(shown)
    assert calls == []
    assert f"barenet {__version__}" in info
    assert f"{data}  (cached: mnist;" in info
    assert f"{tmp_path / 'runs'}  (1 finished, newest {Path('runs/r')})" in info
    for name in SHIPPED:
        assert (f"model:   {name}" in info) == (shipped_path(name) is not None)


def test_train_live_keeps_the_page_up_on_a_terminal_until_enter(monkeypatch, capsys):
    import io

    from barenet.app import train_cmd

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("\n"))
    assert train_cmd._linger("http://127.0.0.1:1/", 0) == 0
    assert "press Enter to stop it" in capsys.readouterr().err
    assert train_cmd._linger("http://127.0.0.1:1/", 130) == 130          # failed: nothing to watch
    assert train_cmd._linger(None, 0) == 0
    assert capsys.readouterr().err == ""


def test_a_real_sweep_shows_its_trials(tiny_data, tmp_path):
    pytest.importorskip("optuna", reason="barenet[sweep] (optuna) is not installed")
    spec = tmp_path / "lr.toml"
    spec.write_text('[config.model]\nhidden = [8]\n[config.training]\nepochs = 2\n'
                    '[sampler]\nname = "grid"\n[params]\n"optimizer.lr" = [0.05, 0.1]\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "runs" / "lr"), "--jobs", "1"]) == 0
    with TestClient(create_app(tmp_path / "runs")) as c:
        body = c.get("/api/runs").json()
    trials = sorted((r["id"], r["group"], r["status"], r["epochs_done"]) for r in body["runs"])
    assert trials == [("lr/trial-0000", "lr", "finished", 2),
                      ("lr/trial-0001", "lr", "finished", 2)]
