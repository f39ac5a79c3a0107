"""Two `barenet sweep` processes sharing one study in a real PostgreSQL server, as two machines.

The server is private to the test: initdb + pg_ctl in a temporary directory, listening on
127.0.0.1 only on a free port, trust authentication, stopped by its PID at the end. As root,
PostgreSQL refuses to run, so it runs as `nobody` (runuser).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="barenet[sweep] (optuna) is not installed")
pytest.importorskip("psycopg", reason="barenet[sweep] (psycopg) is not installed")

from test_sweep import (  # noqa: E402
    GRID,
    GRID_POINTS,
    params_of,
    start_sweep,
    without_surplus,
    write_spec,
)


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql); "
                    ".ci/run installs Debian's postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="barenet-pg-"))
    if os.geteuid() == 0:                       # postgres will not run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and no runuser to start PostgreSQL as nobody")
        as_user = [runuser, "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
    data, port = root / "data", free_port()
    pid = None
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "barenet",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
                   f"-c fsync=off")
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                        str(root / "server.log"), "-w", "-t", "60", "-o", options, "start"],
                       check=True, capture_output=True)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://barenet@127.0.0.1:{port}/postgres"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGINT)          # "fast" shutdown
            deadline = time.time() + 30
            while time.time() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


def test_two_machines_share_one_postgresql_study(postgres_url, tmp_path):
    spec = write_spec(tmp_path, GRID, epochs=3)
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    procs = [start_sweep(["sweep", str(spec), "--out", str(out), "--storage", postgres_url,
                          "--study", "shared"], pause=0.02) for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    from barenet.app.sweep import make_storage
    study = optuna.load_study(study_name="shared", storage=make_storage(postgres_url, 10))
    trials = without_surplus(study.get_trials(), outs)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert set(params_of(trials)) == GRID_POINTS                  # each trial ran once
    for t in trials:                      # ... on one of the two machines, in its directory
        where = [out for out in outs if (out / t.user_attrs["run"] / "model.safetensors").exists()]
        assert len(where) == 1, t.number
        config = json.loads((where[0] / t.user_attrs["run"] / "config.json").read_text())
        assert config["optimizer"]["lr"] == t.params["optimizer.lr"]
    for out in outs:                      # both wrote the report and best.toml of the study
        assert json.loads((out / "sweep.json").read_text())["storage"] == postgres_url
        assert (out / "best.toml").is_file()
