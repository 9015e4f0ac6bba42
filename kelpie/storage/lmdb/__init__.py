"""The LMDB backend family: ``lmdb://`` (the embedded default).

Modules: ``storage`` (the ``Storage`` implementation and its record layout)
and ``env`` (the environment, its writer thread and error translation).
"""

from kelpie.storage.lmdb.storage import LMDBOptions, LMDBStorage, open_lmdb

__all__ = ["LMDBOptions", "LMDBStorage", "open_lmdb"]
