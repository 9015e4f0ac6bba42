"""``kelpie verify SRC DST``: every actor of two stores compared by digest, both ways.

The comparison itself is ``kelpie.storage.copying.verify_stores`` (each actor
read as one committed version on both sides, SHA-256 over its sorted,
length-prefixed records); this module adds the progress counter, the summary
and the list of differing actors.
"""

from __future__ import annotations

import argparse

from kelpie.lifecycle_cli.common import (
    FAILED,
    Progress,
    actor_text,
    open_url,
    run_command,
    safe_url,
)
from kelpie.storage.copying import Comparison, verify_stores

__all__ = ["add_verify_arguments", "difference_lines", "run_verify"]

SHOWN = 20
"""How many differing actors a report names."""


def difference_lines(result: Comparison) -> list[str]:
    """The first ``SHOWN`` differences, one per line."""
    named = [
        *(f"  different: {actor_text(a)}" for a in result.different),
        *(f"  missing:   {actor_text(a)}" for a in result.missing),
        *(f"  extra:     {actor_text(a)}" for a in result.extra),
    ]
    if len(named) > SHOWN:
        named = [*named[:SHOWN], f"  ... and {len(named) - SHOWN:,} more"]
    return named


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="storage URL of the source")
    parser.add_argument("destination", metavar="DST", help="storage URL of the destination")
    parser.add_argument("--namespace", metavar="NS", help="compare only this namespace")


async def _verify(source_url: str, destination_url: str, namespace: str | None) -> int:
    source = open_url(source_url)
    try:
        destination = open_url(destination_url)
        try:
            progress = Progress("compared")
            try:
                result = await verify_stores(source, destination, namespace, on_actor=progress.add)
            finally:
                progress.close()
        finally:
            await destination.close()
    finally:
        await source.close()
    where = f"{safe_url(source_url)} -> {safe_url(destination_url)}"
    print(f"verify {where}: {result.summary()}")
    for line in difference_lines(result):
        print(line)
    return 0 if result.ok else FAILED


def run_verify(args: argparse.Namespace) -> int:
    return run_command("verify", _verify(args.source, args.destination, args.namespace))
