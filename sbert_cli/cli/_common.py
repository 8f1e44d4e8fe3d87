"""What every command shares: option types, logging setup, and turning errors into exit codes."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from sbert_cli.errors import SbertError

F = TypeVar("F", bound=Callable)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log what is going on to stderr.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model directory or hub name [default: all-MiniLM-L6-v2, bundled]."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto | fp32 | bf16 | fp16 | int8. auto: bf16 on GPUs and on CPUs with native bf16, else fp32 (see README).",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option("--backend", help="auto | torch | onnx (CPU: fp32, int8). auto: onnx for int8, torch otherwise."),
]
PoolingOpt = Annotated[
    str | None,
    typer.Option(
        "--pooling", help="Override the model's pooling: mean, max, cls, mean_sqrt_len_tokens, weightedmean, lasttoken."
    ),
]
NormalizeOpt = Annotated[
    bool | None,
    typer.Option(
        "--normalize/--no-normalize", help="Override whether vectors are L2-normalized [default: as the model says]."
    ),
]


def error(message: str) -> None:
    """One line on stderr, the way the user will grep for it."""
    print(f"sbert: error: {message}", file=sys.stderr)


def messenger(quiet: bool) -> Callable[[str], None]:
    """`say(message)`: one `sbert: ...` line on stderr, silent under --quiet (errors are not)."""
    from sbert_cli.cli.progress import CliReporter

    return CliReporter(quiet=quiet).message


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="sbert: %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("sbert").setLevel(level)


def handle_errors(func: F) -> F:
    """Run a command; SbertError becomes one line and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SbertError as exc:
            error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted; work committed so far is kept (run the same command again to continue)")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # `sbert search ... | head`: the reader went away, which is not our failure.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except MemoryError:
            error("out of memory; try smaller batches (--batch-tokens) or a smaller input")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
