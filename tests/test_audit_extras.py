"""Issue 14, item 4: a command whose optional extra is missing says in one line what to install
(exit 1) before doing any work, and `--help` works without it.

A missing package is simulated, never uninstalled: sys.modules[name] = None (what
monkeypatch.setitem does here) or an import hook that refuses the name.
"""

import re
import sys
from pathlib import Path

import pytest

from barenet.app.cli import main
from barenet.app.extras import EXTRAS, PACKAGES, extra_of

ROOT = Path(__file__).resolve().parents[1]
COMMAND_MODULES = ("barenet.app.server", "barenet.app.explore")


def block(monkeypatch, *names: str) -> None:
    """Make `import name` (and its submodules) fail as if the package were not installed;
    forget the command modules that imported them, so they are imported anew."""
    for name in names:
        for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)
    for module in COMMAND_MODULES:
        monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or a data set counts as work done before the check: it fails the test."""
    import barenet.app.common
    import barenet.data

    def work(*args, **kwargs):
        raise AssertionError("work was done before the missing extra was reported")

    monkeypatch.setattr(barenet.data, "load_dataset", work)
    monkeypatch.setattr(barenet.app.common, "load_model_arg", work)


def test_extras_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")                      # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]

    def packages(extra: str) -> set[str]:
        """pyproject's distributions of `extra`, with barenet[other] expanded."""
        names = set()
        for requirement in declared[extra]:
            name = re.split(r"[<>=!~;\s]", requirement, maxsplit=1)[0].lower()
            if name.startswith("barenet["):
                for other in name[len("barenet["):-1].split(","):
                    names |= packages(other)
            else:
                names.add(name.split("[")[0])
        return names

    # A new extra needs its line in EXTRAS (and a require() in the commands that use it).
    assert set(declared) - {"app", "test", "bench"} <= set(EXTRAS)
    for extra, entries in EXTRAS.items():
        if extra not in declared:                 # EXTRAS may lead pyproject by a commit
            continue
        ours = {PACKAGES.get(m, m) for e in entries
                for m in ((e[0],) if isinstance(e, tuple) else (e,))}
        assert ours == packages(extra), extra
    assert extra_of("matplotlib.pyplot") == "plots" and extra_of("numpy") is None


CASES = [
    (["serve", "MODEL"], ("fastapi",), "web", "fastapi"),
    (["serve", "MODEL", "--port", "0"], ("python_multipart", "multipart"), "web",
     "python-multipart"),
    (["explore", "MODEL"], ("textual",), "tui", "textual"),
    (["lr-find", "--out", "OUT/lr.png"], ("matplotlib",), "plots", "matplotlib"),
    (["augment-preview", "--set", "augment.rotate=10", "--out", "OUT/a.png"], ("matplotlib",),
     "plots", "matplotlib"),
    (["report", "OUT"], ("matplotlib",), "plots", "matplotlib"),
]


@pytest.mark.parametrize("args, modules, extra, package", CASES,
                         ids=[f"{c[0][0]}-{c[1][0]}" for c in CASES])
def test_missing_extra_is_one_line_before_any_work(args, modules, extra, package, tmp_path,
                                                   monkeypatch, no_work, capsys):
    block(monkeypatch, *modules)
    args = [a.replace("MODEL", str(tmp_path / "model.safetensors")).replace("OUT", str(tmp_path))
            for a in args]
    assert main(args) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"pip install 'barenet[{extra}]'" in lines[0] and package in lines[0]
    assert f"barenet {args[0]}" in lines[0]
    assert not out and list(tmp_path.iterdir()) == []          # nothing written


@pytest.mark.parametrize("command, modules, extra", [
    ("serve", ("fastapi",), "web"), ("explore", ("textual",), "tui"),
    ("lr-find", ("matplotlib",), "plots"), ("report", ("matplotlib",), "plots"),
    ("augment-preview", ("matplotlib",), "plots"), ("compare", ("matplotlib",), "plots"),
])
def test_help_works_without_the_extra(command, modules, extra, monkeypatch, capsys):
    block(monkeypatch, *modules)
    assert main(["--help"]) == 0
    assert command in capsys.readouterr().out
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"barenet {command}" in out
    if command in ("serve", "explore"):                   # modules that import the extra
        assert f"pip install 'barenet[{extra}]'" in " ".join(out.split())


def test_an_import_hook_that_refuses_fastapi(tmp_path, monkeypatch, no_work, capsys):
    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("fastapi", "uvicorn"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    for name in [m for m in sys.modules if m.split(".")[0] in ("fastapi", "uvicorn")]:
        monkeypatch.delitem(sys.modules, name)
    for module in COMMAND_MODULES:
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    assert main(["serve", str(tmp_path), "--host", "127.0.0.1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'barenet[web]'" in err


def test_compare_and_train_go_on_without_plots(tiny_data, tmp_path, monkeypatch, capsys):
    """compare's table and train's run need no plots: they say what is missing and succeed."""
    run = tmp_path / "run"
    assert main(["train", "--set", "model.hidden=[8]", "--epochs", "1", "--out", str(run),
                 "-q"]) == 0
    block(monkeypatch, "matplotlib")
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert "pip install 'barenet[plots]'" in capsys.readouterr().out
