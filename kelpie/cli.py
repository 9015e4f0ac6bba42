"""The ``kelpie`` command: ``demo``, ``conformance``, ``dst``, ``bench``, the data-lifecycle
commands (``actors``, ``show``, ``delete``, ``copy``, ``verify``); ``--version``.

Each subcommand lives in its own module and is imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

__all__ = ["main"]

# subcommand -> (module, its add-arguments function, its run function, help)
_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": (
        "kelpie.demo.command",
        "add_arguments",
        "run",
        "run the bank demo with injected faults and check its invariants",
    ),
    "conformance": (
        "kelpie.cli",
        "_add_conformance_arguments",
        "_run_conformance",
        "run the storage conformance suite against a storage URL",
    ),
    "dst": (
        "kelpie.dst.cli",
        "add_dst_arguments",
        "run_dst_command",
        "run deterministic simulation seeds with fault injection",
    ),
    "bench": (
        "kelpie.bench.command",
        "add_arguments",
        "run",
        "measure invocations/s and latency per backend, beside the raw client",
    ),
    "actors": (
        "kelpie.lifecycle_cli.inspect",
        "add_actors_arguments",
        "run_actors",
        "list the actors of a store (--json: one object per line)",
    ),
    "show": (
        "kelpie.lifecycle_cli.inspect",
        "add_show_arguments",
        "run_show",
        "show one actor: its state, seq, lease, idempotency records and KV keys",
    ),
    "delete": (
        "kelpie.lifecycle_cli.inspect",
        "add_delete_arguments",
        "run_delete",
        "delete one actor and every record of it (asks first unless --yes)",
    ),
    "copy": (
        "kelpie.lifecycle_cli.copy",
        "add_copy_arguments",
        "run_copy",
        "copy every actor from one store to another (any backends), then verify",
    ),
    "verify": (
        "kelpie.lifecycle_cli.digest",
        "add_verify_arguments",
        "run_verify",
        "compare two stores actor by actor (SHA-256 of every record)",
    ),
    "migrate": ("kelpie.migrate_cli", "add_arguments", "run", "migrate stored state to a class"),
}


def _add_conformance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the storage URL to test, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest"
    )


def _run_conformance(args: argparse.Namespace) -> int:
    from kelpie.conformance_cli import run_conformance

    return run_conformance(args.url, list(args.pytest_args))


def version() -> str:
    """The installed package's version (its metadata), or ``unknown`` when not installed."""
    try:
        return importlib.metadata.version("kelpie")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kelpie",
        description="kelpie: virtual actors whose every invocation is one storage transaction.",
    )
    parser.add_argument(
        "--version", action="version", version=f"kelpie {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, add_name, run_name, help_text) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            command.set_defaults(_unavailable=f"{name} is unavailable: {exc}")
            continue
        getattr(module, add_name)(command)
        command.set_defaults(_run=getattr(module, run_name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unavailable = getattr(args, "_unavailable", None)
    if unavailable is not None:
        print(f"kelpie: {unavailable}", file=sys.stderr)
        return 2
    code: int = args._run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
