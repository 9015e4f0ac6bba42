"""``kelpie copy SRC DST``: every actor from any backend to any other, resumable, verified.

The copy is ``kelpie.storage.copying.copy_store`` (each actor read as one
committed version and written in one destination transaction; ``--resume``
from the destination's own listing, ADR 0015; what a copy of a live source
guarantees is in that module's docstring); this module adds the progress
counters, the summary and the final verification report (exit status 1 on
any difference).
"""

from __future__ import annotations

import argparse
import time

from kelpie.lifecycle_cli.common import (
    FAILED,
    USAGE,
    CommandError,
    Progress,
    actor_text,
    open_url,
    run_command,
    safe_url,
)
from kelpie.lifecycle_cli.digest import difference_lines
from kelpie.storage.copying import DestinationNotEmptyError, copy_store, verify_stores
from kelpie.storage.protocol import Storage

__all__ = ["add_copy_arguments", "run_copy"]


async def _copy(
    source_url: str,
    destination_url: str,
    namespace: str | None,
    *,
    merge: bool,
    resume: bool,
) -> int:
    src_name, dst_name = safe_url(source_url), safe_url(destination_url)
    if source_url == destination_url:
        raise CommandError(f"SRC and DST are the same store ({src_name})", USAGE)
    source = open_url(source_url)
    try:
        destination = open_url(destination_url)
        try:
            return await _copy_between(
                source, destination, namespace, src_name, dst_name, merge=merge, resume=resume
            )
        finally:
            await destination.close()
    finally:
        await source.close()


async def _copy_between(
    source: Storage,
    destination: Storage,
    namespace: str | None,
    src_name: str,
    dst_name: str,
    *,
    merge: bool,
    resume: bool,
) -> int:
    started = time.perf_counter()
    progress = Progress("copied")
    try:
        report = await copy_store(
            source,
            destination,
            namespace,
            merge=merge,
            resume=resume,
            verify=False,
            on_actor=progress.add,
        )
    except DestinationNotEmptyError:
        scope = "" if namespace is None else f" (namespace {namespace!r})"
        raise CommandError(
            f"{dst_name} is not empty{scope}: pass --merge to copy into it "
            "(replacing actors of the same id) or --resume to continue an interrupted copy"
        ) from None
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    after = report.resumed_after
    resumed = "" if after is None else f", resumed after {actor_text(after)}"
    gone = f" ({report.vanished:,} deleted from the source meanwhile)" if report.vanished else ""
    print(
        f"copied {report.copied:,} actors{gone} from {src_name} to {dst_name} "
        f"in {seconds:.1f} s{resumed}"
    )
    checking = Progress("verified")
    try:
        result = await verify_stores(
            source, destination, namespace, sources_only=True, on_actor=checking.add
        )
    finally:
        checking.close()
    print(f"verify: {result.summary()}")
    for line in difference_lines(result):
        print(line)
    if not result.ok:
        print(
            "the copy does not match: if the source was written meanwhile, "
            "run the copy again with --merge (or stop the writers first)"
        )
        return FAILED
    return 0


def add_copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="storage URL to copy from")
    parser.add_argument("destination", metavar="DST", help="storage URL to copy to")
    parser.add_argument("--namespace", metavar="NS", help="copy only this namespace")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="copy into a non-empty destination, replacing actors of the same id",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a copy that was interrupted (the destination holds only its actors)",
    )


def run_copy(args: argparse.Namespace) -> int:
    return run_command(
        "copy",
        _copy(args.source, args.destination, args.namespace, merge=args.merge, resume=args.resume),
    )
