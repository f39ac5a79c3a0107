"""`barenet serve MODEL`: a draw-a-digit page and a JSON API (FastAPI + uvicorn), loopback only.

Every user image goes through barenet.data.preprocess, as in `barenet predict`. Request bodies are
limited (Content-Length checked first, then counted while streaming), images too (from their
header, before decoding); every error, bad input or unknown route, gets JSON {"error": "..."}.
Deadlines for slow and idle clients are in serving.py, the body limit in asgi.py. The API is
described at /openapi.json (each error it can answer included) and shown by /docs, an offline
page (no CDN).

Here: the app factory, its JSON error answers and the command. The routes are in
server_routes.py, their shapes and body checks in server_schema.py, the model in
server_predictor.py.
"""

from __future__ import annotations

import click
import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import server_routes
from .asgi import BodyLimit
from .server_predictor import Predictor
from .server_routes import STATIC

MAX_BODY = 5 * 1024 * 1024  # bytes; a 280x280 canvas PNG is ~10 kB


def create_app(model, meta: dict, test: tuple[np.ndarray, np.ndarray] | None = None, *,
               max_body: int = MAX_BODY) -> FastAPI:
    """The web app for one model; `test` = (x_test, y_test) enables the gallery."""
    from .. import __version__

    app = FastAPI(title="barenet", version=__version__,
                  description="Draw a digit, get the network's answer. All images are "
                              "preprocessed as MNIST digits were (barenet.data.preprocess).",
                  docs_url=None, redoc_url=None)  # their pages load from a CDN; /docs is ours
    app.add_middleware(BodyLimit, limit=max_body)
    app.state.predictor = Predictor(model, meta, test)
    app.state.max_body = max_body
    # Starlette's HTTPException: also routing's 404 and 405, not only ours.
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
    app.include_router(server_routes.pages)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(server_routes.api)
    return app


async def http_error(request, exc: StarletteHTTPException):
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such page or API route: {request.url.path} (the API is at /docs)"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"method {request.method} not allowed on {request.url.path}" + (
            f": use {allowed}" if allowed else "")
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


async def validation_error(request, exc: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                         for e in exc.errors())
    return JSONResponse({"error": problems or "invalid request"}, status_code=422)


async def internal_error(request, exc: Exception):  # logged by uvicorn; the server goes on
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


@click.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback by default: only this machine).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MNIST cache directory.")
def command(model, host, port, data_dir):
    """Serve a draw-a-digit page and a JSON API for MODEL (run dir, model file or shipped
    name; left out, the default shipped model)."""
    from .extras import require
    require("web", "serve")

    from .. import data
    from .asgi import bind, is_loopback
    from .common import Failure, dataset_of, load_model_arg
    from .serving import uvicorn_server

    net, meta = load_model_arg(model)
    try:
        _, test = data.load_dataset(dataset_of(meta), data_dir)
    except data.DataError as exc:
        click.echo(f"warning: no gallery ({exc})", err=True)
        test = None
    app = create_app(net, meta, test)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise Failure(str(exc), 1) from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: other machines can reach this server",
                   err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"barenet serve: http://{shown}:{sock.getsockname()[1]}/  "
               f"(API docs at /docs; Ctrl-C stops)")
    import sys
    sys.stdout.flush()
    uvicorn_server(app, max_body=MAX_BODY).run(sockets=[sock])
    return 0
