"""Ray, optional: importing it, and a runtime for the length of one call.

`ray` is an extra (`pip install 'sbert-cli[ray]'`); only this package imports it, and only when
a command asks for `--ray`. A runtime sbert starts is shut down when the call ends, and what
`ray.init` changes in this process (environment variables, the open-files limit, logging, the
exception and fault handlers) is put back, so a Python caller finds its process as it was.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import re
import resource
import sys
from collections.abc import Iterator
from typing import Any

from sbert_cli.errors import InputError, SbertError
from sbert_cli.extras import missing_extra

RAY_EXTRA = "pip install 'sbert-cli[ray]'"
LOCAL = "local"
_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:\d+")
log = logging.getLogger("sbert")


def import_ray() -> Any:
    """The `ray` module, or an InputError (exit 2) that names the command installing it."""
    # Importing ray sets an environment variable and sys.excepthook (both only read at import).
    environ, excepthook = dict(os.environ), sys.excepthook
    try:
        import ray
    except ImportError:
        raise missing_extra("--ray", "Ray", "ray") from None
    finally:
        _restore_environ(environ)
        sys.excepthook = excepthook
    return ray


def _restore_environ(saved: dict[str, str]) -> None:
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


def check_address(address: str | None) -> str | None:
    """None for a private local runtime (`--ray` alone, or `--ray local`); else the cluster's
    address as Ray takes it: `auto`, `ray://HOST:PORT` (Ray Client) or `HOST:PORT`."""
    if address in (None, "", LOCAL):
        return None
    if address == "auto" or address.startswith("ray://") or _HOST_PORT.fullmatch(address):
        return address
    raise InputError(
        f"--ray {address}: not a Ray address; write --ray alone (a local runtime), --ray auto (the cluster "
        "this machine belongs to), --ray ray://HOST:PORT or --ray HOST:PORT, after the inputs"
    )


class _ProcessState:
    """What `ray.init` changes in the calling process, saved before and restored after."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.faulthandler = faulthandler.is_enabled()
        self.excepthook = sys.excepthook
        self.ray_logger = logging.getLogger("ray")
        self.ray_level = self.ray_logger.level

    def restore(self) -> None:
        _restore_environ(self.environ)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)
        if not self.faulthandler and faulthandler.is_enabled():
            faulthandler.disable()
        sys.excepthook = self.excepthook
        self.ray_logger.setLevel(self.ray_level)


def _init(ray: Any, address: str | None, num_cpus: int | None) -> None:
    # Ray's own start-up notes (token auth, dashboard) are not sbert's to print; -v shows them.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray").setLevel(logging.ERROR)
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address is None:
        # "local" starts a private runtime even when another one runs on this machine.
        ray.init(address=LOCAL, num_cpus=num_cpus, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """`ray`, connected for the block. A runtime the caller already started is used as it is and
    left running; otherwise sbert starts one (`address` None: local, with `num_cpus`) or connects
    to `address`, and shuts it down afterwards."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    state = _ProcessState()
    try:
        _init(ray, address, num_cpus)
    except ImportError as exc:  # ray:// needs Ray Client's gRPC, which plain `ray` lacks
        state.restore()
        raise InputError(f"--ray {address}: {exc}; Ray Client needs: pip install 'ray[client]'") from None
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        state.restore()
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise SbertError(f"could not start or reach {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        state.restore()


def worker_error(ray: Any, exc: BaseException, what: str) -> SbertError:
    """A Ray failure as one line: an sbert error raised in a worker keeps its message and exit
    code; anything else names the worker's exception, not Ray's wrapping of it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SbertError):
        return type(cause)(str(cause))
    if cause is not None:
        return SbertError(f"{what} failed on a Ray worker: {type(cause).__name__}: {cause}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SbertError(f"{what} failed on Ray: {first}")
