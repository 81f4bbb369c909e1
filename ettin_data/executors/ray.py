"""Run tasks as Ray tasks: a local Ray instance, or an existing cluster (``--ray-address auto|host:port``).

Imported only for ``--executor ray``. Each unit is one Ray task (``num_cpus=1``, explicit
``max_retries``: a task whose worker process dies is retried that many times, an exception raised by
the stage is not retried). Results, failures and progress come back through the same
:class:`base.Outcome` as with the local pool, so the output bytes and the failure summary are the
same whatever runs the units.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from .. import interrupt, progress
from ..errors import ConfigError, EttinError
from ..stats import Stats
from ..units import Task
from .base import WORKER_DIED, Outcome, call, record, worker_env

__all__ = ["run_ray", "RAY_ENV"]

# Keep a local Ray instance on loopback, without an auth token file and without usage reporting
# (set only for a local instance or a head on 127.0.0.1: a real cluster needs the node's own IP).
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _unit(fn: Callable[[Task, Any], Stats], task: Task, cfg: Any, env: dict[str, str]) -> tuple[Any, ...]:
    """Body of one Ray task: run the unit like the local pool does, and count its progress."""
    os.environ.update(env)
    counted = [0, 0]

    def sink(docs: int, tokens: int) -> None:
        counted[0] += docs
        counted[1] += tokens

    progress.set_sink(sink)
    try:
        kind, value, tb = call(fn, task, cfg)
    finally:
        progress.set_sink(None)
    return kind, value, tb, counted[0], counted[1]


def _message(err: BaseException) -> str:
    """One line for a Ray error: the stage's own exception when there is one."""
    import ray.exceptions as rx

    if isinstance(err, rx.RayTaskError):
        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else None
        if cause is not None and not isinstance(cause, rx.RayError):
            return str(cause) if isinstance(cause, EttinError) else f"{type(cause).__name__}: {cause}"
    if isinstance(err, rx.WorkerCrashedError | rx.NodeDiedError | rx.LocalRayletDiedError):
        return WORKER_DIED
    if isinstance(err, rx.OutOfMemoryError):
        return "out of memory (killed by Ray's memory monitor)"
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}".rstrip(": ")


def _loopback(address: str | None) -> bool:
    """No address (a local instance) or a head node on this machine's loopback interface."""
    if address is None:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _reachable(address: str) -> None:
    """Fail in one line (instead of Ray retrying for minutes) when nothing listens at host:port."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ConfigError(f"no Ray cluster at {address} ({e}); start one with `ray start --head` "
                          "or fix --ray-address") from None


def _connect(ray: Any, address: str | None, workers: int) -> bool:
    """Start or join Ray; returns True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        with interrupt.preserved():  # ray.init's own SIGTERM handler (sys.exit) would skip the clean stop
            if address is None:
                ray.init(address="local", num_cpus=workers, **quiet)
            else:
                _reachable(address)
                if _loopback(address):  # a head on loopback: the driver must use it too
                    quiet["_node_ip_address"] = "127.0.0.1"
                ray.init(address=address, **quiet)
    except ConfigError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot start or join {where}: {msg}; check --ray-address (or `ray status`)") from None
    return True


def _cancel(ray: Any, refs: Sequence[Any]) -> None:
    """Stop tasks still queued or running (force: their worker processes are killed), e.g. on Ctrl-C/SIGTERM."""
    for ref in refs:
        with contextlib.suppress(Exception):  # already finished, or the cluster is going away
            ray.cancel(ref, force=True)


def run_ray(
    fn: Callable[[Task, Any], Stats],
    tasks: Sequence[Task],
    cfg: Any,
    *,
    workers: int,
    address: str | None,
    max_retries: int,
    on_progress: Callable[[int, int], None] | None,
    on_done: Callable[[], None],
) -> Outcome:
    """Run ``fn(task, cfg)`` for every task as a Ray task; see the module docstring."""
    if _loopback(address):  # read by Ray at import: keeps a local instance's listeners on 127.0.0.1
        for k, v in RAY_ENV.items():
            os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ettin-data[ray]'") from None
    out = Outcome()
    if not tasks:
        return out
    started = _connect(ray, address, workers)
    # A local instance has `workers` CPUs: each unit gets cores // workers threads. On a cluster Ray
    # packs one unit per CPU, so each unit's libraries get one thread.
    env = worker_env(workers)
    if address is not None:
        env = {k: "false" if k == "TOKENIZERS_PARALLELISM" else "1" for k in env}
    pending: dict[Any, Task] = {}
    try:
        remote = ray.remote(_unit).options(num_cpus=1, max_retries=max_retries, retry_exceptions=False)
        fn_ref, cfg_ref = ray.put(fn), ray.put(cfg)
        for t in tasks:  # one by one: an interrupt between two submissions still cancels the first
            pending[remote.remote(fn_ref, t, cfg_ref, env)] = t
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
            for ref in ready:
                t = pending.pop(ref)
                try:
                    kind, value, tb, docs, tokens = ray.get(ref)
                except ray.exceptions.RayError as e:
                    kind, value, tb, docs, tokens = "error", _message(e), str(e), 0, 0
                if on_progress and (docs or tokens):
                    on_progress(docs, tokens)
                record(out, t.name, (kind, value, tb), on_done)
    except BaseException:  # Ctrl-C, SIGTERM/SIGHUP (interrupt.Terminated) or a bug: no task keeps running
        _cancel(ray, list(pending))
        raise
    finally:
        if started:
            ray.shutdown()
    order = {t.name: i for i, t in enumerate(tasks)}
    out.failures.sort(key=lambda x: order[x[0]])
    return out
