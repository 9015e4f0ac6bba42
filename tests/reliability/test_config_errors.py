"""Bad configuration found by the fuzzer: each must be a ConfigError naming the problem.

These pin down the smallest inputs Hypothesis found (``kelpie.reliability.hostile``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

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


@pytest.fixture
def lmdb_never_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test instead of opening an environment (the URLs below name "/")."""
    pytest.importorskip("lmdb")
    import kelpie.storage.lmdb.storage as lmdb_backend

    def must_not_open(directory: str, *args: object) -> NoReturn:
        pytest.fail(f"an LMDB environment was about to be opened in {directory!r}")

    monkeypatch.setattr(lmdb_backend, "LMDBStorage", must_not_open)


@pytest.mark.parametrize(
    "url", ["lmdb:///", "lmdb:////", "lmdb:///%2F", "lmdb:///tmp/..", "lmdb:///?sync=false"]
)
@pytest.mark.usefixtures("lmdb_never_opens")
def test_lmdb_url_naming_the_filesystem_root_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="filesystem root") as info:
        open_storage(url)
    assert repr(url.replace("%2F", "/")) in str(info.value)  # names the URL


@pytest.mark.usefixtures("lmdb_never_opens")
def test_lmdb_url_through_a_link_to_the_root_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "root").symlink_to("/")
    with pytest.raises(ConfigError, match="filesystem root"):
        open_storage(f"lmdb://{tmp_path}/root")


@pytest.mark.usefixtures("lmdb_never_opens")
def test_lmdb_relative_url_in_the_root_directory_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/")
    with pytest.raises(ConfigError, match="filesystem root"):
        open_storage("lmdb://./")


@pytest.mark.usefixtures("lmdb_never_opens")
def test_lmdb_url_with_an_empty_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="names no directory") as info:
        open_storage("lmdb://")
    assert "'lmdb://'" in str(info.value)
