"""`barenet export MODEL --onnx out.onnx`: a trained model (or ensemble) as an ONNX file that
onnxruntime serves alone, the uint8 -> float scaling inside the graph."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("model")
@click.option("--onnx", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX file.")
@click.option("--rows", is_flag=True,
              help="Take (N, 784) rows instead of (N, 28, 28) images.")
@click.option("--float-input", is_flag=True,
              help="Take float32 values as they are (no /255); the default for models saved "
                   "by barenet.sklearn.NetClassifier from float data.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def command(model, out, rows, float_input, force):
    """Export MODEL (run directory, model file or shipped name) to ONNX.

    Outputs "label" (N,) and "probabilities" (N, K), checked by onnx.checker.
    """
    from ..serialize import ModelFileError, load_model
    from .common import EXIT_FAIL, Failure, resolve_model_path
    from .extras import _present, message

    if not _present("onnx"):
        raise Failure(message("export", "onnx", ["onnx"]), EXIT_FAIL)
    out_path = Path(out)
    if out_path.exists() and not force:
        raise Failure(f"{out_path} exists; add --force to replace it")
    if not out_path.parent.is_dir():
        raise Failure(f"{out_path.parent}: no such directory")
    try:
        path = resolve_model_path(model)
        network, meta = load_model(path)
    except ModelFileError as exc:
        raise Failure(str(exc)) from None

    from ..onnx_export import ExportError, to_onnx
    estimator = meta.get("sklearn")          # written by barenet.sklearn.NetClassifier.save
    input_type = "float32" if float_input else "uint8"
    classes = None
    if isinstance(estimator, dict):
        classes = estimator["classes"]
        if estimator.get("input") == "float32":
            input_type = "float32"
    props = {"source": Path(path).name}
    try:
        proto = to_onnx(network, input_type=input_type,
                        input_shape="rows" if rows or input_type == "float32" else "images",
                        classes=classes, metadata=props)
    except ExportError as exc:
        raise Failure(f"{model}: {exc}") from None
    from ..serialize import atomic_write_bytes
    try:
        atomic_write_bytes(out_path, proto.SerializeToString())
    except OSError as exc:
        raise Failure(f"{out_path}: cannot write ({exc.strerror})", EXIT_FAIL) from None
    shape = proto.graph.input[0].type.tensor_type.shape
    dims = ", ".join(d.dim_param or str(d.dim_value) for d in shape.dim)
    click.echo(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB): input {input_type} "
               f"({dims}), outputs label, probabilities")
    return 0
