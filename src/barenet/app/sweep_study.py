"""The Optuna study of a sweep: its storage (SQLite file or PostgreSQL URL, with heartbeats),
creating or loading it, and which of its trials count. `barenet sweep` runs the trials,
`barenet sweep-report` reads them back; both open the study here.
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import EXIT_FAIL, Failure
from .sweep_spec import Spec, make_pruner, make_sampler

STUDY_FILE = "study.db"
SWEEP_FILE = "sweep.json"
SPEC_ATTR = "barenet_spec"
MAX_RETRY = 1


def trial_dir(out: Path, number: int) -> Path:
    return Path(out) / f"trial-{number:04d}"


def sqlite_url(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / STUDY_FILE}"


def quiet_optuna() -> None:
    import logging
    import warnings

    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_storage(url: str, heartbeat_interval: int):
    """Optuna's RDBStorage with heartbeats; a stale trial is failed and retried once."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import ArgumentError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    shown = masked(url)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]   # psycopg 3 driver
    for attempt in range(3):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs,
                              heartbeat_interval=heartbeat_interval,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=MAX_RETRY))
        except ImportError as exc:
            raise Failure(f"--storage {shown}: {exc} (pip install 'barenet[sweep]')") from None
        except ArgumentError as exc:        # not a database URL SQLAlchemy knows
            raise Failure(f"--storage {shown}: {exc}") from None
        except Exception as exc:   # SQLAlchemy/driver: unreachable server, bad URL, or two
            last = exc             # machines creating the tables at once (then try again)
            time.sleep(1.0 + attempt)
    first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise Failure(f"--storage {shown}: {first}", EXIT_FAIL)


def masked(url: str) -> str:
    """The URL without its password (sweep.json and messages never show one)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_study(spec: Spec, url: str, name: str, worker: int = 0, create: bool = False,
               storage=None):
    """Create the study (once, before workers start) or load it; refuse another spec's study."""
    import optuna

    storage = storage or make_storage(url, spec.heartbeat_interval)
    kwargs = dict(storage=storage, study_name=name, sampler=make_sampler(spec, worker),
                  pruner=make_pruner(spec))
    if create:
        for attempt in range(3):   # two machines creating one schema at once: try again
            try:
                study = optuna.create_study(direction="maximize", load_if_exists=True, **kwargs)
                break
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        saved = study.user_attrs.get(SPEC_ATTR)
        if saved is None:
            study.set_user_attr(SPEC_ATTR, spec.to_json())
            study.set_user_attr("description", spec.description)
        elif saved != spec.to_json():
            raise Failure(f"study {name!r} in {masked(url)} was started with another spec; "
                          f"give another --study or --out")
        return study
    return optuna.load_study(**kwargs)


def retried(trials) -> set[int]:
    """Numbers of the trials that a later trial retries (RetryHeartbeatStaleTrialCallback)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials) -> list:
    """The trials that count towards --trials: finished or running, less retried and surplus."""
    from optuna.trial import TrialState
    again = retried(trials)
    return [t for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                           TrialState.FAIL)
            and t.number not in again and not t.user_attrs.get("surplus")]
