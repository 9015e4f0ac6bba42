"""``postgresql://`` (also ``postgres://``): actor records in one PostgreSQL table, on asyncpg.

Modules: ``url`` (URL and options, no I/O), ``sql`` (the table's DDL and every
statement), ``database`` (pool, schema, reads, batches of commits), ``storage``
(the ``Storage`` protocol), ``errors`` (translation of asyncpg exceptions).
See docs/backends/postgresql.md and ADR 0017.
"""

from kelpie.storage.postgres.sql import SCHEMA_VERSION, ddl
from kelpie.storage.postgres.storage import PostgresStorage
from kelpie.storage.postgres.url import PostgresOptions, open_postgres

__all__ = ["SCHEMA_VERSION", "PostgresOptions", "PostgresStorage", "ddl", "open_postgres"]
