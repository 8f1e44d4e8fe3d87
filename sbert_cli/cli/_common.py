"""What every command shares: option types, clean help, logging setup, and turning errors into exit codes."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

import typer
from typer.core import TyperCommand

from sbert_cli.errors import SbertError

F = TypeVar("F", bound=Callable)
log = logging.getLogger("sbert")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Errors only: no progress, summaries or notes on stderr.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also say which model, pooling, device, dtype and backend were chosen and why, the batch plan, "
        "stage timings, and the traceback of a runtime failure.",
    ),
]
ProgressInterval = Annotated[
    float,
    typer.Option(
        "--progress-interval",
        metavar="SECONDS",
        help="When stderr is not a terminal (cron, 2> log): seconds between progress lines.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", metavar="MODEL", help="Model directory or hub name [default: all-MiniLM-L6-v2, bundled]."
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N. auto: cuda when there is a GPU.")
]
Dtype = Literal["auto", "fp32", "bf16", "fp16", "int8"]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        help="auto: on GPUs bf16 (fp16 without native bf16); on the CPU fp32, or bf16 where `sbert encode` "
        "measures it faster on a CPU with native bf16 (see README).",
    ),
]
Backend = Literal["auto", "torch", "onnx", "openvino"]
BackendOpt = Annotated[
    Backend,
    typer.Option(
        "--backend",
        help="onnx runs fp32 and int8 on the CPU; openvino (extra) fp32 and bf16 on the CPU. auto: onnx "
        "for int8; for a new store with --dtype auto, the engine `sbert encode` measures fastest; else torch.",
    ),
]
PoolingOpt = Annotated[
    str | None,
    typer.Option(
        "--pooling",
        metavar="MODE[,MODE]",
        help="Override the model's pooling: mean, max, cls, mean_sqrt_len_tokens, weightedmean, lasttoken "
        "(several concatenate in the order given).",
    ),
]
NormalizeOpt = Annotated[
    bool | None,
    typer.Option(
        "--normalize/--no-normalize", help="Override whether vectors are L2-normalized [default: as the model says]."
    ),
]
PromptNameOpt = Annotated[
    str | None,
    typer.Option(
        "--prompt-name",
        metavar="NAME",
        help="Prepend the model's prompt of this name (config_sentence_transformers.json) "
        "[default: the model's default prompt, if it has one].",
    ),
]
PromptOpt = Annotated[
    str | None,
    typer.Option("--prompt", metavar="TEXT", help='Prepend this text to every input; --prompt "" for none.'),
]
MaxSeqLengthOpt = Annotated[
    int | None, typer.Option(metavar="TOKENS", help="Truncate texts to this many tokens [default: the model's].")
]
ThreadsOpt = Annotated[int | None, typer.Option(metavar="N", help="CPU threads for the model [default: all cores].")]
OutputFormat = Literal["table", "jsonl", "tsv", "csv", "json"]


# -- help that reads cleanly ------------------------------------------------------------------------
_TYPE_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT"}


def _argument_name(param, usage: bool = False) -> str:
    name = param.metavar or param.name.upper()
    if param.nargs != 1:
        name += "..."
    return f"[{name}]" if usage and not param.required else name


def _option_name(name: str) -> str:
    """typer writes `--dtype <auto|fp32>`, `-k <int>`: Click's `[auto|fp32]` and `INTEGER` read better."""
    match = re.search(r" <([^<>]+)>$", name)
    if match is None:
        return name
    label = match.group(1)
    label = f"[{label}]" if "|" in label else _TYPE_LABELS.get(label, label.upper())
    return f"{name[: match.start()]} {label}"


def _range_words(help_text: str) -> str:
    """Click's `[x>=1]` as `[at least 1]`."""
    help_text = re.sub(r"\bx>=([\d.]+)", r"at least \1", help_text)
    help_text = re.sub(r"\bx<=([\d.]+)", r"at most \1", help_text)
    return re.sub(r"([\d.]+)<=x<=([\d.]+)", r"\1 to \2", help_text)


# Options whose value may be left out, and what it then is: `--ray` alone is `--ray local`.
# (Click's parser has no optional values: the bare option is rewritten before it parses.)
OPTIONAL_VALUES = {"--ray": "local"}


def _fill_optional_values(args: list[str]) -> list[str]:
    return [
        f"{arg}={OPTIONAL_VALUES[arg]}"
        if arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1][:1] == "-")
        else arg
        for i, arg in enumerate(args)
    ]


class SbertCommand(TyperCommand):
    """A command whose usage and help show `INPUT...`, `TEXT`, `[a|b]`, never Python type names."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p, usage=True) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append((_option_name(record[0]), _range_words(record[1])))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = _fill_optional_values(args)
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:
            # typer words a bad choice "Value error, 'x' is not one of ...": keep Click's plain sentence.
            exc.message = exc.message.removeprefix("Value error, ")
            raise


# -- messages, logging, errors ---------------------------------------------------------------------
def error(message: str) -> None:
    """One line on stderr, the way the user will grep for it (a library's message, or a name from
    the data, may hold newlines: they are shown as \\n)."""
    message = message.rstrip("\n").replace("\r", "\\r").replace("\n", "\\n")
    print(f"sbert: error: {message}", file=sys.stderr)


def messenger(quiet: bool) -> Callable[[str], None]:
    """`say(message)`: one `sbert: ...` line on stderr, silent under --quiet (errors are not)."""
    from sbert_cli.cli.progress import CliReporter

    return CliReporter(quiet=quiet).message


def version_line() -> str:
    """`sbert 0.1.0 (Python 3.11.7; torch 2.13.0, transformers 5.24.0)`, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from sbert_cli import __version__

    parts = []
    for package in ("torch", "transformers", "sentence-transformers", "onnxruntime"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    python = ".".join(map(str, sys.version_info[:3]))
    return f"sbert {__version__} (Python {python}; {', '.join(parts)})"


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="sbert: %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("sbert").setLevel(level)
    log.debug("%s", version_line())


def _verbose() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def handle_errors(func: F) -> F:
    """Run a command; an error becomes one line and its exit code (a traceback too under -v)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SbertError as exc:
            _fail(str(exc), exc.exit_code, exc)
        except KeyboardInterrupt:
            _fail("interrupted; work committed so far is kept (run the same command again to continue)", 130)
        except BrokenPipeError:
            # `sbert search ... | head`: the reader went away, which is not our failure.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except MemoryError as exc:
            _fail("out of memory; try smaller batches (--batch-tokens) or a smaller input", 1, exc)
        except (typer.Exit, typer.Abort, typer.TyperException, SystemExit):
            raise  # Click's own exits and usage errors, which it words and codes itself
        except Exception as exc:  # a bug or an environment failure: say what, keep the details for -v
            hint = "" if _verbose() else " (run with -v for the traceback)"
            _fail(f"{type(exc).__name__}: {exc}{hint}", 1, exc)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int, exc: BaseException | None = None) -> None:
    if exc is not None and _verbose() and code != 2:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    error(message)
    raise typer.Exit(code) from None


def prepare_fast_queries(store_path: str) -> None:
    """After `sbert index`: cache the ONNX graph that lets `sbert search` answer without importing
    torch (encoding/query.py). Exported once per model; a failure only costs search speed."""
    from sbert_cli.encoding.loader import ENCODER_FACTORIES
    from sbert_cli.encoding.query import prepare_query_graph
    from sbert_cli.store.store import Store

    try:
        record = Store.open(store_path).model
        if record.name.split(":", 1)[0] in ENCODER_FACTORIES:  # a stand-in model (tests): nothing to export
            return
        path = prepare_query_graph(record)
    except SbertError as exc:
        log.warning("searches will load the full model (no fast query encoder: %s)", exc)
        return
    log.debug("fast query encoder: %s", path or "not for this model (full model at search time)")
