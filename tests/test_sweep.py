"""`barenet sweep` / `sweep-report` on the synthetic digits: specs, grids, workers, kills, resume.

Workers are forked, so the tiny_data stand-in for MNIST reaches them; sweeps started as
separate processes patch it the same way (SWEEP_SCRIPT).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="barenet[sweep] (optuna) is not installed")

from barenet.app.cli import main  # noqa: E402
from barenet.config import load_config  # noqa: E402


@pytest.fixture(autouse=True)
def _no_plots(request, monkeypatch):
    """Optuna's plots cost seconds per sweep; only the report test draws them."""
    if request.node.name != "test_report_and_best_toml":
        monkeypatch.setattr("barenet.app.sweep_report.write_plots", lambda *a, **k: {})


TINY = """
heartbeat_interval = 1
[config.model]
hidden = [16]
[config.training]
epochs = {epochs}
batch_size = 50
"""

GRID = TINY + """
[sampler]
name = "grid"
[params]
"model.hidden" = [[16], [24]]
"optimizer.lr" = [0.05, 0.1]
"""


def write_spec(tmp_path, text, name="spec.toml", epochs=2, top=""):
    """top: top-level keys (they must come before TINY's tables)."""
    path = tmp_path / name
    path.write_text(top + text.replace("{epochs}", str(epochs)))
    return path


def load_study(out, name="spec"):
    from barenet.app.sweep import sqlite_url
    return optuna.load_study(study_name=name, storage=sqlite_url(out))


def params_of(trials):
    return [json.dumps(t.params, sort_keys=True) for t in trials]


def complete(study):
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def without_surplus(trials, out_dirs):
    """Two workers asking in the same instant may create one trial too many: it must be
    recorded as pruned, marked surplus, and train nothing. The other trials are returned."""
    for t in trials:
        if t.user_attrs.get("surplus"):
            assert t.state.name == "PRUNED" and "run" not in t.user_attrs
    assert not [d for out in out_dirs for d in out.glob("trial-*")
                if d.name not in {t.user_attrs.get("run") for t in trials}]
    return [t for t in trials if not t.user_attrs.get("surplus")]


GRID_POINTS = {json.dumps({"model.hidden": h, "optimizer.lr": lr}, sort_keys=True)
               for h in ("[16]", "[24]") for lr in (0.05, 0.1)}


def test_grid_with_two_workers_runs_each_combination_once(tiny_data, tmp_path):
    spec, out = write_spec(tmp_path, GRID), tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    study = load_study(out)
    trials = without_surplus(study.get_trials(), [out])
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4        # none lost, none extra
    assert set(params_of(trials)) == GRID_POINTS                   # no duplicate
    for t in trials:                     # every trial is an ordinary run directory
        run = out / f"trial-{t.number:04d}"
        assert t.user_attrs["run"] == run.name
        assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
        config = json.loads((run / "config.json").read_text())
        assert json.dumps(config["model"]["hidden"]) == t.params["model.hidden"]
        assert config["optimizer"]["lr"] == t.params["optimizer.lr"]
        history = json.loads((run / "history.json").read_text())
        assert t.value == history[-1]["val_accuracy"]      # the objective: validation accuracy
        assert t.intermediate_values == {r["epoch"]: r["val_accuracy"] for r in history}
    assert main(["evaluate", str(out / "trial-0002"), "--json"]) == 0
    assert main(["compare", str(out / "trial-0000"), str(out / "trial-0003"), "--out",
                 str(tmp_path / "curves.png")]) == 0
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:                   # each worker pinned to half the cores, BLAS to match
        for t in trials:
            assert len(t.user_attrs["cores"]) == len(cpus) // 2
            assert t.user_attrs["blas_threads"] in (0, len(cpus) // 2)

    # The same command again: the study is complete, nothing new runs.
    before = len(load_study(out).get_trials())
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    assert len(load_study(out).get_trials()) == before


def test_report_and_best_toml(tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    spec, out = write_spec(tmp_path, GRID), tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    for name in ("sweep-report.html", "sweep-history.png", "sweep-parallel.png",
                 "sweep-comparison.png", "best.toml"):
        assert (out / name).is_file(), name
    (out / "best.toml").unlink()
    assert main(["sweep-report", str(out)]) == 0
    study = load_study(out)
    best = max(complete(study), key=lambda t: (t.value, -t.number))
    config = load_config(out / "best.toml")
    assert json.dumps(list(config.model.hidden)) == best.params["model.hidden"]
    assert config.optimizer.lr == best.params["optimizer.lr"]
    assert config.training.epochs == 2 and config.model.dropout == 0.2
    html = (out / "sweep-report.html").read_text()
    assert "sweep-comparison.png" in html and f"trial-{best.number:04d}" in html
    test_acc = json.loads((out / f"trial-{best.number:04d}" / "metrics.json").read_text())
    assert f"{test_acc['test_accuracy']:.4f}" in html
    # best.toml trains as it is
    assert main(["train", "--config", str(out / "best.toml"), "--out", str(tmp_path / "b"),
                 "-q"]) == 0


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tiny_data, tmp_path):
    spec = write_spec(tmp_path, TINY + """
[sampler]
name = "grid"
[params]
"optimizer.lr" = [0.1, 1e30]
""")
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    trials = {t.params["optimizer.lr"]: t for t in load_study(out).get_trials()}
    assert trials[0.1].state.name == "COMPLETE"
    bad = trials[1e30]
    assert bad.state.name == "FAIL"
    reason = bad.user_attrs["fail_reason"]
    assert reason.startswith("TrainingDiverged: loss became") and "\n" not in reason


def test_same_seed_same_trials(tiny_data, tmp_path):
    spec = write_spec(tmp_path, TINY + """
[sampler]
name = "tpe"
seed = 3
n_startup_trials = 2
[params]
"optimizer.lr" = { low = 0.01, high = 0.3, log = true }
"model.dropout" = { low = 0.0, high = 0.5 }
"training.batch_size" = [25, 50]
""", top="trials = 4\n")
    runs = []
    for name in ("a", "b"):
        assert main(["sweep", str(spec), "--out", str(tmp_path / name)]) == 0
        runs.append([(t.params, t.value) for t in load_study(tmp_path / name).get_trials()])
    assert runs[0] == runs[1] and len(runs[0]) == 4
    assert len({json.dumps(p, sort_keys=True) for p, _ in runs[0]}) == 4


def test_median_pruner_stops_trials_early(tiny_data, tmp_path):
    spec = write_spec(tmp_path, TINY + """
[sampler]
name = "random"
seed = 0
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 1
[params]
"optimizer.lr" = { low = 1e-5, high = 0.3, log = true }
""", epochs=5, top="trials = 6\n")
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    trials = load_study(out).get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and len(trials) == 6
    for t in pruned:           # stopped early, and its run directory is still complete
        history = json.loads((out / t.user_attrs["run"] / "history.json").read_text())
        assert len(history) == max(t.intermediate_values) < 5
        assert (out / t.user_attrs["run"] / "model.safetensors").is_file()


@pytest.mark.parametrize("text, message", [
    ('[params]\n"model.widht" = [1, 2]', "unknown config key 'model.widht'"),
    ('[params]\n"optimizer.lr" = []', "empty list"),
    ('[params]\n"optimizer.lr" = { low = 0.5, high = 0.1 }', "empty range"),
    ('[params]\n"optimizer.lr" = ["fast"]', "optimizer.lr: expected a number"),
    ('[params]\n"optimizer.lr" = { low = 0.0, high = 0.1, log = true }', "log range needs low > 0"),
    ('[params]\n"model.dropout" = [0.1, 1.5]', "model.dropout must be in [0, 1)"),
    ('[sampler]\nname = "grid"\n[params]\n"optimizer.lr" = { low = 0.01, high = 0.1 }',
     "grid sampler needs a list"),
    ('[sampler]\nname = "annealing"\n[params]\n"optimizer.lr" = [0.1]', "sampler.name must be"),
    ('[pruner]\nname = "median"\nwarmup = 3\n[params]\n"optimizer.lr" = [0.1]',
     "[pruner] median:"),
    ('tirals = 4\n[params]\n"optimizer.lr" = [0.1]', "unknown key 'tirals'"),
    ('base = "nowhere.toml"\n[params]\n"optimizer.lr" = [0.1]', "'nowhere.toml' not found"),
    ('[config.data]\nvalidation = 0\n[params]\n"optimizer.lr" = [0.1]', "data.validation is 0"),
    ('[sampler]\nname = "tpe"\n[params]\n"optimizer.lr" = [0.1]', "give trials = N"),
    ("[params", "not valid TOML"),
])
def test_bad_spec_is_refused_before_anything_runs(tmp_path, capsys, text, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_another_spec_on_the_same_study_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(write_spec(tmp_path, GRID)), "--out", str(out)]) == 0
    changed = write_spec(tmp_path, GRID.replace("0.05", "0.07"))
    assert main(["sweep", str(changed), "--out", str(out)]) == 2
    assert "started with another spec" in capsys.readouterr().err
    assert len(load_study(out).get_trials()) == 4


def test_sweep_report_without_a_sweep(tmp_path, capsys):
    assert main(["sweep-report", str(tmp_path)]) == 2
    assert "is this a sweep directory" in capsys.readouterr().err


SWEEP_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import barenet.data
    from conftest import synthetic_digits
    data = synthetic_digits()
    barenet.data.load_dataset = lambda *a, **k: data
    from barenet.app import runs, sweep
    runs._write_report = lambda out: None
    from barenet.app import sweep_report
    sweep_report.write_plots = lambda *a, **k: {{}}
    # slow batches, so that a kill lands in the middle of a trial
    sweep.PruneOnValidation.on_batch_end = lambda self, batch, logs: time.sleep({pause})
    from barenet.app.cli import main
    sys.exit(main({argv!r}))
""")


def start_sweep(argv, pause=0.03):
    script = SWEEP_SCRIPT.format(tests=str(Path(__file__).parent), argv=argv, pause=pause)
    # SIGINT at its default action in the child: a shell's background job inherits it
    # ignored, and the Ctrl-C test would then see the sweep finish.
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_a_trial_in_progress(out, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any((d / "checkpoint.safetensors").exists() and not (d / "model.safetensors").exists()
               for d in out.glob("trial-*")):
            return
        time.sleep(0.05)
    raise AssertionError("no trial started")


def children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def check_complete_grid(out):
    """4 complete trials, the grid's four points; every failed trial retried exactly once."""
    study = load_study(out)
    trials = without_surplus(study.get_trials(), [out])
    done = complete(study)
    assert set(params_of(done)) == GRID_POINTS and len(done) == 4
    failed = [t for t in trials if t.state.name == "FAIL"]
    retries = [t for t in trials if "retry_history" in t.system_attrs]
    assert sorted(t.system_attrs["retry_history"][-1] for t in retries) == \
        sorted(t.number for t in failed)
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    return failed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="--jobs forks worker processes")
def test_worker_killed_mid_trial_is_failed_by_heartbeat_and_retried(tmp_path):
    spec, out = write_spec(tmp_path, GRID, epochs=4), tmp_path / "sweep"
    proc = start_sweep(["sweep", str(spec), "--out", str(out), "--jobs", "2"])
    wait_for_a_trial_in_progress(out)
    workers = children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err        # the sweep says a worker died ...
    assert "worker 0 ended with signal 9" in err
    failed = check_complete_grid(out)       # ... and the other worker retried its trial
    assert len(failed) == 1
    # Re-running the same command finds nothing left to do.
    before = len(load_study(out).get_trials())
    assert start_sweep(["sweep", str(spec), "--out", str(out)]).wait(timeout=60) == 0
    assert len(load_study(out).get_trials()) == before


def test_sweep_killed_mid_trial_resumes_when_run_again(tmp_path):
    spec, out = write_spec(tmp_path, GRID, epochs=4), tmp_path / "sweep"
    argv = ["sweep", str(spec), "--out", str(out)]
    proc = start_sweep(argv)
    wait_for_a_trial_in_progress(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    study = load_study(out)                 # consistent: finished trials + one left running
    states = [t.state.name for t in study.get_trials()]
    assert states[-1] == "RUNNING" and set(states[:-1]) <= {"COMPLETE"}
    again = start_sweep(argv, pause=0)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert len(check_complete_grid(out)) == 1


def test_menu_runs_a_preset(monkeypatch):
    from barenet.app.menu import run_menu
    from barenet.app.sweep_presets import presets

    found = presets()
    assert {p.stem for p in found} >= {"architectures", "learning-rates", "activations",
                                       "mlp-tpe", "cnn-tpe"}
    calls = []
    answers = iter(["5", "2", "1", "5", "x", "q"])
    shown = []
    assert run_menu(lambda argv: calls.append(argv) or 0,
                    ask=lambda prompt, default=None: next(answers), echo=shown.append) == 0
    assert calls == [["sweep", str(found[1]), "--jobs", "1"]]
    assert any("train multiple model configurations" in line for line in shown)
    assert any("no such preset" in line for line in shown)


@pytest.mark.parametrize("name", ["architectures", "learning-rates", "activations", "mlp-tpe",
                                  "cnn-tpe"])
def test_presets_are_valid_specs(name):
    from barenet.app.sweep_presets import preset_dir
    from barenet.app.sweep_spec import load_spec
    spec = load_spec(preset_dir() / f"{name}.toml")
    assert spec.description and spec.target_trials() >= 5


def test_ctrl_c_fails_the_trial_and_queues_its_retry(tmp_path):
    spec, out = write_spec(tmp_path, GRID, epochs=4), tmp_path / "sweep"
    argv = ["sweep", str(spec), "--out", str(out)]
    proc = start_sweep(argv)
    wait_for_a_trial_in_progress(out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in err
    trials = load_study(out).get_trials()
    assert [t.state.name for t in trials[-2:]] == ["FAIL", "WAITING"]
    assert trials[-1].system_attrs["retry_history"] == [trials[-2].number]
    again = start_sweep(argv, pause=0)
    assert again.wait(timeout=120) == 0
    assert len(check_complete_grid(out)) == 1


@pytest.mark.parametrize("then", ["lost", "replaced"])
def test_a_lost_ctrl_c_still_stops_the_sweep(tiny_data, tmp_path, monkeypatch, then):
    """Ctrl-C whose KeyboardInterrupt Python loses (raised in a finalizer) or that a failing
    cleanup replaces with its own error: the sweep still stops with 130 at the epoch's end,
    the trial failed and its retry queued, not recorded as an ordinary failure."""
    from barenet.app import sweep
    spec, out = write_spec(tmp_path, GRID, epochs=3), tmp_path / "sweep"
    calls = []

    def batch_end(self, batch, logs):
        calls.append(batch)
        if len(calls) == 3:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                if then == "replaced":
                    raise OSError("cleanup failed while unwinding") from None

    monkeypatch.setattr(sweep.PruneOnValidation, "on_batch_end", batch_end, raising=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert main(["sweep", str(spec), "--out", str(out)]) == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # put back
    trials = load_study(out).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert "fail_reason" not in trials[0].user_attrs
    assert trials[1].system_attrs["retry_history"] == [0]


def test_core_shares():
    from barenet.app.sweep import core_shares
    assert core_shares([0, 1], 2) == [[0], [1]]
    assert core_shares([0, 1, 2, 3], 2) == [[0, 2], [1, 3]]
    assert core_shares([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert core_shares([0, 1], 3) == [[0], [1], [0]]
    assert core_shares([5], 1) == [[5]]
