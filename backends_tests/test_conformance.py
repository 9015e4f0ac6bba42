"""Every built-in backend against the one conformance suite (``kelpie.testing.conformance``).

``pytest backends_tests`` runs it on memory, fakeredis, a real redis-server
and LMDB; ``pytest backends_tests --storage-url=URL`` runs it on URL only.
"""

from kelpie.testing.conformance import *  # noqa: F403
