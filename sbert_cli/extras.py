"""Optional extras (matplotlib for `--plot`, Ray for `--ray`): one rule for a missing one.

A missing extra exits 2, the usage code, not 1: the command asked for something this
installation cannot do, it is found before any work starts (nothing is written), and the fix is
the user's, as with a bad option: install the extra, or drop the option. Exit 1 stays for
failures while working. The message names the option, what it needs and the pip command.
"""

from __future__ import annotations

from sbert_cli.errors import InputError


class MissingExtra(InputError):
    """An option needs a package from an optional extra that is not installed. Exit code 2."""


def missing_extra(option: str, package: str, extra: str) -> MissingExtra:
    """`--plot needs matplotlib, an optional extra: pip install 'sbert-cli[plot]'`."""
    return MissingExtra(f"{option} needs {package}, an optional extra: pip install 'sbert-cli[{extra}]'")
