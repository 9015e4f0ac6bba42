"""Bad configuration found by the fuzzer: each must be a ConfigError naming the problem.

These pin down the smallest inputs Hypothesis found (``kelpie.reliability.hostile``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kelpie.errors import ConfigError
from kelpie.storage.registry import open_storage


@pytest.mark.parametrize("url", ["memory://[x", "redis://user:pw@[/0"])
def test_malformed_url_is_a_config_error(url: str) -> None:
    # urllib.parse.urlsplit raises a bare ValueError("Invalid IPv6 URL") for an
    # unbalanced '['; kelpie must translate it like every other bad URL.
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert "pw" not in str(info.value)


def test_lmdb_max_readers_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    # py-lmdb raises OverflowError for a max_readers past a C unsigned int.
    with pytest.raises(ConfigError, match="max_readers"):
        open_storage(f"lmdb://{tmp_path / 'db'}", max_readers=2**31)
