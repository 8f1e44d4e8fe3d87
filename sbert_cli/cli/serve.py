"""`sbert serve`: parse arguments, run `sbert_cli.serve` until stopped."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sbert_cli.cli._common import DeviceOpt, Quiet, Verbose, handle_errors, setup_logging

StoreArg = Annotated[
    str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
]
HostOpt = Annotated[
    str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network (pair with --api-key-env).")
]
PortOpt = Annotated[int, typer.Option(help="Port to listen on (0: any free one; the start-up line says which).")]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key-env",
        metavar="VAR",
        help="Require `Authorization: Bearer <key>` on every API request, the key read from this "
        "environment variable (the page at / asks for it).",
    ),
]
ExactOpt = Annotated[
    bool, typer.Option("--exact", help="Brute-force search over every row (no index loaded; the reference).")
]
MaxBodyBytesOpt = Annotated[
    int, typer.Option(metavar="BYTES", min=1, help="Largest request body; larger ones get 413.")
]
MaxBatchOpt = Annotated[
    int,
    typer.Option(metavar="N", min=1, help="Most texts per /v1/embeddings request and queries per POST /search."),
]
MaxKOpt = Annotated[int, typer.Option(metavar="K", min=1, help="Most hits per query a search may ask for.")]
MaxHitsOpt = Annotated[
    int, typer.Option(metavar="HITS", min=1, help="Most hits one search request may ask for: its queries x k.")
]
MaxTextCharsOpt = Annotated[
    int,
    typer.Option(
        metavar="CHARS", min=1, help="Longest text or query, in characters (the model truncates tokens anyway)."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        min=0.001,
        help="Answer 503 to a request not done by then; close a connection whose request headers "
        "have not all arrived by then.",
    ),
]
BatchWaitMsOpt = Annotated[
    float,
    typer.Option(metavar="MS", min=0, help="How long an idle model waits for other requests to batch with the first."),
]
BatchTokensOpt = Annotated[
    int,
    typer.Option(metavar="TOKENS", min=1, help="Most tokens (estimated) the requests of one model batch may hold."),
]
PollOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        min=0,
        help="How often to look for new commits of the store (sbert encode, sbert index); 0: never.",
    ),
]

KeepRowsOpt = Annotated[
    int,
    typer.Option(
        "--keep-rows-mb",
        metavar="MB",
        min=0,
        help="Memory for the hits' columns (text, source, line, key, kept fields), kept to answer searches "
        "without reading the store; a larger store's row groups are read as needed, the latest kept.",
    ),
]


@handle_errors
def serve(
    store: StoreArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    api_key_env: ApiKeyEnvOpt = None,
    exact: ExactOpt = False,
    max_body_bytes: MaxBodyBytesOpt = 4 * 1024 * 1024,
    max_batch: MaxBatchOpt = 2048,
    max_k: MaxKOpt = 1000,
    max_hits: MaxHitsOpt = 100_000,
    max_text_chars: MaxTextCharsOpt = 65_536,
    timeout: TimeoutOpt = 30.0,
    batch_wait_ms: BatchWaitMsOpt = 5.0,
    batch_tokens: BatchTokensOpt = 16_384,
    poll: PollOpt = 1.0,
    keep_rows_mb: KeepRowsOpt = 1024,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Serve a store over HTTP: embeddings (OpenAI's API), search, a search page, health and metrics."""
    from sbert_cli.errors import InputError
    from sbert_cli.serve import ServeOptions
    from sbert_cli.serve.server import serve as run

    setup_logging(verbose, quiet)
    # Between model batches a server's OpenMP threads (torch's libgomp) would spin for libgomp's
    # default 300,000 rounds on the cores its event loop (and, on a shared machine, other
    # processes) need; fully asleep (OMP_WAIT_POLICY=PASSIVE), every parallel region waits on a
    # wake-up instead. A short spin keeps most of both: torch bf16 behind /v1/embeddings, 16
    # clients, 2-core EPYC, served 300-348 texts/s PASSIVE and 345-377 at 10,000 rounds
    # (benchmarks/bench_serve.py). Read when torch loads, which is later; a value the user set
    # (either variable) is kept.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key.strip():
            raise InputError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    options = ServeOptions(
        store=store,
        exact=exact,
        device=device,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_k=max_k,
        max_hits=max_hits,
        max_text_chars=max_text_chars,
        timeout_s=timeout,
        batch_wait_ms=batch_wait_ms,
        batch_tokens=batch_tokens,
        poll_s=poll,
        keep_rows_bytes=keep_rows_mb << 20,
    )
    run(options, host, port, verbose)
