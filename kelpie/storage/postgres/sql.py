"""The one table's DDL and every statement kelpie sends to PostgreSQL.

One table holds everything (docs/backends/postgresql.md, ADR 0017), keyed by
``(namespace, id, key)``, all ``bytea``:

- a **record**: an actor's key (1-256 bytes) and its ``value``;
- the actor's **header**: ``key = ''`` (no record key is empty), holding its
  ``incarnation`` (drawn when the actor is created: never reused, so
  ``(incarnation, version)`` never repeats across a ``delete_actor``) and its
  ``version`` (bumped by every commit); the fence compares both;
- two **meta rows** under ``namespace = '' AND id = ''`` (no actor has an empty
  part): ``schema_version`` and ``deletes``, a store-wide counter that every
  ``delete_actor`` bumps. A new actor's incarnation is that counter, read under
  a share lock that no delete can pass, so it is larger than the incarnation of
  any earlier life of that actor.

``bytea`` compares bytewise (then by length), and UTF-8 bytes compare like code
points, so the primary key's order is ``ActorId`` order: ``list_actors`` is an
index range scan of the partial index on header rows, ``list_keys`` a range
scan of the primary key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEMA_VERSION", "Statements", "ddl", "quote_ident", "upper_bound"]

SCHEMA_VERSION = 1
"""The table layout this module writes and reads."""

_META = "namespace = '\\x'::bytea AND id = '\\x'::bytea"
_HEADER = "'\\x'::bytea"


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier, exactly as given (quoted)."""
    return '"' + name.replace('"', '""') + '"'


def ddl(table: str) -> list[str]:
    """The statements that create the table (idempotent), its index and its meta rows."""
    t = quote_ident(table)
    index = quote_ident(f"{table}_actors")
    return [
        f"""CREATE TABLE IF NOT EXISTS {t} (
    namespace   bytea  NOT NULL,  -- UTF-8 of ActorId.namespace ('' only in meta rows)
    id          bytea  NOT NULL,  -- UTF-8 of ActorId.id ('' only in meta rows)
    key         bytea  NOT NULL,  -- the record's key; '' in the actor's header row
    value       bytea,            -- the record's value; NULL in header and meta rows
    incarnation bigint,           -- header: this life of the actor (never reused)
    version     bigint,           -- header: commits in this life; meta: the number
    PRIMARY KEY (namespace, id, key)
)""",
        f"CREATE INDEX IF NOT EXISTS {index} ON {t} (namespace, id) WHERE key = {_HEADER}",
        f"""INSERT INTO {t} (namespace, id, key, version) VALUES
    ('\\x'::bytea, '\\x'::bytea, 'schema_version'::bytea, {SCHEMA_VERSION}),
    ('\\x'::bytea, '\\x'::bytea, 'deletes'::bytea, 0)
ON CONFLICT DO NOTHING""",
    ]


def upper_bound(prefix: bytes) -> bytes | None:
    """The least key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


@dataclass(frozen=True)
class Statements:
    """Every statement for one table (built once per storage)."""

    schema_version: str
    read_value: str
    read_values: str
    read_keys: str
    read_keys_below: str
    read_version: str
    get: str
    list_keys: str
    list_keys_below: str
    commit: str
    lock_deletes: str
    delete_actor: str
    list_actors: str
    list_actors_after: str
    list_namespace: str
    list_namespace_after: str

    @classmethod
    def for_table(cls, table: str) -> Statements:
        t = quote_ident(table)
        deletes = f"(SELECT version FROM {t} WHERE {_META} AND key = 'deletes'::bytea)"
        header = (
            f"(SELECT incarnation, version FROM {t}"
            f" WHERE namespace = $1 AND id = $2 AND key = {_HEADER})"
        )
        # One statement each, so the header and the data come from one snapshot.
        version_cols = f"h.incarnation, h.version, {deletes} AS deletes"
        head = f"SELECT {version_cols} FROM (SELECT 1) one LEFT JOIN {header} h ON true"

        # Built by functions, never str.format: the quoted table name may hold braces.
        def keys_from(below: str) -> str:
            return (
                f"SELECT {version_cols}, k.keys FROM (SELECT 1) one LEFT JOIN {header} h ON true"
                f" CROSS JOIN (SELECT array(SELECT key FROM {t} WHERE namespace = $1 AND id = $2"
                f" AND key > {_HEADER} AND key >= $3 {below} ORDER BY key) AS keys) k"
            )

        def actors(where: str) -> str:
            return (
                f"SELECT h.namespace, h.id FROM {t} h WHERE h.key = {_HEADER}"
                f" AND h.namespace > '\\x'::bytea {where}"
                f" AND EXISTS (SELECT 1 FROM {t} r WHERE r.namespace = h.namespace"
                f" AND r.id = h.id AND r.key > {_HEADER})"
                f" ORDER BY h.namespace, h.id LIMIT $1"
            )

        return cls(
            schema_version=(
                f"SELECT version FROM {t} WHERE {_META} AND key = 'schema_version'::bytea"
            ),
            read_value=(
                f"SELECT {version_cols}, (SELECT value FROM {t}"
                f" WHERE namespace = $1 AND id = $2 AND key = $3) AS value"
                f" FROM (SELECT 1) one LEFT JOIN {header} h ON true"
            ),
            # Many reads in one statement (one snapshot), for the read batcher.
            read_values=(
                f"SELECT r.n, h.incarnation, h.version, d.deletes, v.value"
                f" FROM unnest($1::bytea[], $2::bytea[], $3::bytea[])"
                f" WITH ORDINALITY AS r(ns, id, key, n)"
                f" LEFT JOIN (SELECT version AS deletes FROM {t}"
                f" WHERE {_META} AND key = 'deletes'::bytea) d ON true"
                f" LEFT JOIN {t} h ON h.namespace = r.ns AND h.id = r.id AND h.key = {_HEADER}"
                f" LEFT JOIN {t} v ON v.namespace = r.ns AND v.id = r.id AND v.key = r.key"
            ),
            read_keys=keys_from(""),
            read_keys_below=keys_from("AND key < $4"),
            read_version=head,
            get=f"SELECT value FROM {t} WHERE namespace = $1 AND id = $2 AND key = $3",
            list_keys=(
                f"SELECT key FROM {t} WHERE namespace = $1 AND id = $2"
                f" AND key > {_HEADER} AND key >= $3 ORDER BY key"
            ),
            list_keys_below=(
                f"SELECT key FROM {t} WHERE namespace = $1 AND id = $2"
                f" AND key > {_HEADER} AND key >= $3 AND key < $4 ORDER BY key"
            ),
            commit=_commit(t),
            lock_deletes=(
                f"UPDATE {t} SET version = version + 1 WHERE {_META} AND key = 'deletes'::bytea"
            ),
            delete_actor=f"DELETE FROM {t} WHERE namespace = $1 AND id = $2",
            list_actors=actors(""),
            list_actors_after=actors("AND (h.namespace, h.id) > ($2, $3)"),
            list_namespace=actors("AND h.namespace = $2"),
            list_namespace_after=actors("AND h.namespace = $2 AND h.id > $3"),
        )


def _commit(t: str) -> str:
    """One round of a batch: every job's fence and writes in ONE statement.

    Jobs (``$1``..``$6``, one element each; no actor twice in a round):
    ``mode`` 2 expects the header ``(inc, ver)`` it read; 1 expects the actor
    absent with the ``deletes`` counter it read (``seen``); 0 (write-only)
    expects whatever this statement's snapshot holds. Writes (``$7``..``$9``):
    the job's number (1-based), the key, the value (NULL: delete).

    The fence is the header ``UPDATE ... WHERE incarnation = .. AND version = ..``
    (or the ``INSERT ... ON CONFLICT DO NOTHING`` of a new header): under READ
    COMMITTED a concurrent commit's row lock makes it wait and then re-check the
    condition against the newest row, so a job whose header moved matches no row
    and writes nothing; the record writes join on the jobs that passed. The
    statement returns the numbers of the jobs that committed.
    """
    return f"""WITH meta AS (
    SELECT version AS deletes FROM {t} WHERE {_META} AND key = 'deletes'::bytea FOR SHARE
), jobs AS (
    SELECT j.n, j.ns, j.id, j.mode, j.inc, j.ver, j.seen
    FROM unnest($1::bytea[], $2::bytea[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
         WITH ORDINALITY AS j(ns, id, mode, inc, ver, seen, n)
), want AS (
    SELECT j.n, j.ns, j.id, j.mode, j.seen, m.deletes,
           CASE WHEN j.mode = 0 THEN h.incarnation ELSE j.inc END AS inc,
           CASE WHEN j.mode = 0 THEN h.version ELSE j.ver END AS ver,
           CASE WHEN j.mode = 0 THEN h.version IS NULL ELSE j.mode = 1 END AS absent
    FROM jobs j CROSS JOIN meta m
    LEFT JOIN {t} h ON h.namespace = j.ns AND h.id = j.id AND h.key = {_HEADER}
), bumped AS (
    UPDATE {t} t SET version = t.version + 1
    FROM want w
    WHERE NOT w.absent AND t.namespace = w.ns AND t.id = w.id AND t.key = {_HEADER}
      AND t.incarnation = w.inc AND t.version = w.ver
    RETURNING w.n
), created AS (
    INSERT INTO {t} (namespace, id, key, incarnation, version)
    SELECT w.ns, w.id, {_HEADER}, w.deletes, 1 FROM want w
    WHERE w.absent AND (w.mode = 0 OR w.seen = w.deletes)
    ON CONFLICT (namespace, id, key) DO NOTHING
    RETURNING namespace, id
), ok AS (
    SELECT n FROM bumped
    UNION ALL
    SELECT w.n FROM created c JOIN want w ON w.ns = c.namespace AND w.id = c.id
), writes AS (
    SELECT j.ns, j.id, w.key, w.value
    FROM unnest($7::bigint[], $8::bytea[], $9::bytea[]) AS w(n, key, value)
    JOIN ok ON ok.n = w.n JOIN jobs j ON j.n = w.n
), deleted AS (
    DELETE FROM {t} t USING writes w
    WHERE w.value IS NULL AND t.namespace = w.ns AND t.id = w.id AND t.key = w.key
), upserted AS (
    INSERT INTO {t} (namespace, id, key, value)
    SELECT ns, id, key, value FROM writes WHERE value IS NOT NULL
    ON CONFLICT (namespace, id, key) DO UPDATE SET value = excluded.value
)
SELECT n FROM ok"""
