"""The data-lifecycle commands: ``kelpie actors``, ``show``, ``delete``, ``copy``, ``verify``.

- ``common.py``: opening a storage URL, parsing ``NS/ID``, printing bytes
  safely, one-line errors and exit codes, progress on stderr.
- ``inspect.py``: ``actors`` (list), ``show`` (one actor's records) and
  ``delete``.
- ``digest.py``: reading one actor consistently and its SHA-256 digest;
  ``verify``.
- ``copy.py``: ``copy`` (streamed, resumable, verified).

Exit status: 0 on success; 1 when the command ran but failed (a difference
found, a delete declined, a storage error); 2 for a bad URL, actor id or option.
See docs/operations.md.
"""
