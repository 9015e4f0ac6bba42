"""``sqlite://``: embedded, durable storage in one SQLite file (standard library).

``sqlite:///abs/path.db`` or ``sqlite://./rel.db``. WAL mode; reads never wait
for the writer; commits run on one writer thread with group commit. Modules:
``url`` (URL and options), ``storage`` (the ``Storage`` protocol),
``database`` (schema, connections, the writer thread), ``errors`` (translation
of ``sqlite3`` exceptions). See docs/backends/sqlite.md.
"""

from kelpie.storage.sqlite.database import SCHEMA, SCHEMA_VERSION, SQLiteOptions
from kelpie.storage.sqlite.storage import SQLiteStorage
from kelpie.storage.sqlite.url import open_sqlite

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SQLiteOptions", "SQLiteStorage", "open_sqlite"]
