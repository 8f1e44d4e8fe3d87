"""`sbert serve`: parse arguments, run `sbert_cli.serve` until stopped."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sbert_cli.cli._common import DeviceOpt, Quiet, Verbose, handle_errors, setup_logging


@handle_errors
def serve(
    store: Annotated[
        str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network (pair with --api-key-env).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (0: any free one; the start-up line says which).")
    ] = 8080,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            metavar="VAR",
            help="Require `Authorization: Bearer <key>` on every API request, the key read from this "
            "environment variable (the page at / asks for it).",
        ),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Brute-force search over every row (no index loaded; the reference).")
    ] = False,
    max_body_bytes: Annotated[
        int, typer.Option(metavar="BYTES", min=1, help="Largest request body; larger ones get 413.")
    ] = 4 * 1024 * 1024,
    max_batch: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="Most texts per /v1/embeddings request and queries per POST /search."),
    ] = 2048,
    max_k: Annotated[int, typer.Option(metavar="K", min=1, help="Most hits per query a search may ask for.")] = 1000,
    max_text_chars: Annotated[
        int,
        typer.Option(
            metavar="CHARS", min=1, help="Longest text or query, in characters (the model truncates tokens anyway)."
        ),
    ] = 65_536,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.001, help="Answer 503 to a request not done by then.")
    ] = 30.0,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            metavar="MS", min=0, help="How long an idle model waits for other requests to batch with the first."
        ),
    ] = 5.0,
    batch_tokens: Annotated[
        int,
        typer.Option(metavar="TOKENS", min=1, help="Most tokens (estimated) the requests of one model batch may hold."),
    ] = 16_384,
    poll: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="How often to look for new commits of the store (sbert encode, sbert index); 0: never.",
        ),
    ] = 1.0,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Serve a store over HTTP: embeddings (OpenAI's API), search, a search page, health and metrics."""
    from sbert_cli.errors import InputError
    from sbert_cli.serve import ServeOptions
    from sbert_cli.serve.server import serve as run

    setup_logging(verbose, quiet)
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
        max_text_chars=max_text_chars,
        timeout_s=timeout,
        batch_wait_ms=batch_wait_ms,
        batch_tokens=batch_tokens,
        poll_s=poll,
    )
    run(options, host, port, verbose)
