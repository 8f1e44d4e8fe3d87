"""Errors that the CLI turns into one-line messages and exit codes (no tracebacks)."""

from __future__ import annotations


class SbertError(Exception):
    """A failure the user should read about in one line. Exit code 1: runtime failure."""

    exit_code = 1


class InputError(SbertError):
    """Bad input or usage: missing file, undecodable text, wrong column, mixed models. Exit code 2."""

    exit_code = 2


def located(path: str, line: int | None, message: str) -> str:
    """Format `path:line: message`, the shape compilers use, so editors can jump to it."""
    return f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"
