"""Command line of the suite: choose cases, run them, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import common

CASES = ("epoch-sgd", "epoch-adam", "infer-batch", "infer-128", "epoch-cnn", "epoch-cnn-best",
         "epoch-cnn-best-aug", "infer-cnn-best", "augment", "recipe", "rss", "startup", "load")
DATA_CASES = {"epoch-sgd", "epoch-adam", "infer-batch", "infer-128", "epoch-cnn",
              "epoch-cnn-best", "epoch-cnn-best-aug", "infer-cnn-best", "augment"}
DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="barenet vs PyTorch on the CPU: MLP epochs, inference, time to 98 %, "
                    "memory, start-up. Ratios are barenet / PyTorch from alternating runs.")
    p.add_argument("--cases", nargs="+", choices=CASES, metavar="CASE", default=list(CASES),
                   help=f"cases to run (default: all): {', '.join(CASES)}")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions (3 epochs), the recipe for barenet alone, RSS "
                        "over a 2-epoch training")
    p.add_argument("--epochs", type=int, default=None,
                   help="measured epochs per epoch case, after one warm-up (default 7, quick 3)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help="where to write the results (default benchmarks/results/latest.json; "
                        "- for nowhere)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS and PyTorch threads (default: NumPy's BLAS default)")
    p.add_argument("--no-torch", action="store_true", help="run barenet alone")
    p.add_argument("--torch-flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True) first: subnormal floats flushed to zero "
                        "in this thread, for PyTorch and NumPy alike (PyTorch's default is off)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training images in the epoch cases")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST cache directory")
    p.add_argument("--settle", type=float, default=common.SETTLE_SECONDS,
                   help="pause in seconds before each timed run, so the other library's "
                        "threads have stopped spinning (default %(default)s)")
    return p.parse_args(argv)


def load_data(data_dir):
    import barenet.data

    return barenet.data.load_dataset("mnist", data_dir, progress=False)


def run_cases(args, torch, say) -> list[common.Result]:
    from . import cnn, cnn_best, mlp, process, recipe

    quick = args.quick
    epochs = args.epochs or (3 if quick else 7)
    repeats = 5 if quick else 15
    data = load_data(args.data_dir) if set(args.cases) & DATA_CASES else None
    cnn_epochs = args.epochs or (2 if quick else 3)
    jobs = {
        "epoch-sgd": lambda: mlp.epoch_case("sgd", data, torch, epochs=epochs,
                                            limit=args.limit),
        "epoch-adam": lambda: mlp.epoch_case("adam", data, torch, epochs=epochs,
                                             limit=args.limit),
        "infer-batch": lambda: mlp.inference_case(None, data, torch, repeats=repeats),
        "infer-128": lambda: mlp.inference_case(128, data, torch, repeats=repeats),
        "epoch-cnn": lambda: cnn.epoch_case(data, torch, epochs=args.epochs or (3 if quick else 5),
                                            limit=args.limit),
        "epoch-cnn-best": lambda: cnn_best.epoch_case(data, torch, epochs=cnn_epochs,
                                                      augment=False, limit=args.limit),
        "epoch-cnn-best-aug": lambda: cnn_best.epoch_case(data, torch, epochs=cnn_epochs,
                                                          augment=True, limit=args.limit),
        "infer-cnn-best": lambda: cnn_best.inference_case(data, torch,
                                                          repeats=3 if quick else 7),
        "augment": lambda: cnn_best.augment_case(data, torch, epochs=3 if quick else 5,
                                                 limit=args.limit),
        "recipe": lambda: recipe.recipe_case(None if quick else torch,
                                             data_dir=args.data_dir),
        "rss": lambda: process.rss_case(epochs=2 if quick else None, data_dir=args.data_dir),
        "startup": lambda: process.startup_case(repeats=3 if quick else 7),
        "load": lambda: process.load_case(repeats=3 if quick else 7, data_dir=args.data_dir),
    }
    results = []
    for case in CASES:
        if case not in args.cases:
            continue
        say(f"running {case} ...")
        start, others = time.perf_counter(), common.OtherLoad()
        result = jobs[case]()
        result.other_load = others.cores()
        results.append(result)
        say(f"  done in {time.perf_counter() - start:.1f} s; other processes used "
            f"{result.other_load} cores meanwhile")
    return results


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "images/s":
        return f"{value:,.0f} img/s"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:g} {unit}"


def print_table(results, info, console) -> None:
    from rich.table import Table

    table = Table(title="barenet vs PyTorch (ratio = barenet / PyTorch, medians)")
    for name, justify in (("case", "left"), ("what", "left"), ("barenet", "right"),
                          ("PyTorch", "right"), ("ratio", "right"), ("target", "left"),
                          ("met", "center"), ("others", "right")):
        table.add_column(name, justify=justify)
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[r.ok]
        what = r.what + (f"\n[dim]{r.note}[/]" if r.note else "")
        table.add_row(r.case, what, fmt(r.barenet, r.unit), fmt(r.torch, r.unit), ratio,
                      r.target, met, "-" if r.other_load is None else f"{r.other_load:.2f}")
    console.print(table)
    console.print("[dim]others: cores kept busy by other processes during the case (0 = quiet "
                  "machine). With all cores in use by BLAS threads, any outside load stalls "
                  "them: absolute times then mean little, the alternating ratios a bit more.[/]")
    blas = info["blas"]
    console.print(f"[dim]{info['cpu']}, {info['cores']} cores; NumPy {info['numpy']} "
                  f"({blas.get('internal_api', '?')} {blas.get('version', '')}, kernel "
                  f"{blas.get('architecture', '?')}, {blas.get('num_threads', '?')} threads); "
                  f"PyTorch {info['torch'] or 'absent'}; load {info['load_before']} -> "
                  f"{info['load_after']}[/]")


def main(argv=None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console(stderr=True)
    torch = None if args.no_torch else common.torch_or_none()
    if torch is None:
        why = "--no-torch" if args.no_torch else "PyTorch is not installed " \
              "(pip install -e '.[bench]')"
        console.print(f"[yellow]{why}: timing barenet alone, no ratios[/]")
    if torch is not None and args.torch_flush_denormal:
        torch.set_flush_denormal(True)
    threads = common.set_threads(args.threads)
    common.SETTLE_SECONDS = args.settle
    load_before = common.load_average()
    results = run_cases(args, torch, lambda msg: console.print(f"[dim]{msg}[/]"))
    info = common.machine_info()
    info.update(threads=threads, load_before=load_before, load_after=common.load_average(),
                torch_used=torch is not None, time=time.strftime("%Y-%m-%d %H:%M:%S %z"),
                flush_denormal=bool(torch is not None and args.torch_flush_denormal),
                settle_seconds=args.settle)
    # A table wider than the 80 columns rich assumes when stdout is not a terminal.
    print_table(results, info, Console(width=None if Console().is_terminal else 130))
    if args.json and str(args.json) != "-":
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info,
                                         "results": [r.to_dict() for r in results]},
                                        indent=2) + "\n")
        console.print(f"[dim]wrote {args.json}[/]")
    return 0
