"""The storage conformance suite: the contract every ``Storage`` backend must meet.

Written once against the ``Storage`` protocol and run against every built-in
backend and any URL you give it::

    pytest --pyargs kelpie.testing.conformance -p kelpie.testing.plugin \\
        --storage-url=myscheme://...
    kelpie conformance myscheme://...

Or pull the tests into your own test module (fixtures come from
``kelpie.testing.plugin``)::

    pytest_plugins = ["kelpie.testing.plugin"]
    from kelpie.testing.conformance import *

Every test writes only to actors with fresh, unique ids, so it is safe to run
against a shared deployment; nothing else is changed or deleted (a listing of
every namespace reads other actors' ids, and looks only at its own).
"""

from kelpie.testing.conformance.test_actor_lifecycle import TestActorLifecycle
from kelpie.testing.conformance.test_concurrency import TestConcurrency
from kelpie.testing.conformance.test_conflicts import TestConflicts
from kelpie.testing.conformance.test_consistent_reads import TestConsistentReads
from kelpie.testing.conformance.test_lifecycle import TestLifecycle
from kelpie.testing.conformance.test_list_keys import TestActorIsolation, TestListKeys
from kelpie.testing.conformance.test_model import TestModel
from kelpie.testing.conformance.test_transactions import TestTransactions
from kelpie.testing.conformance.test_values import TestLimits, TestRoundTrips

__all__ = [
    "TestActorIsolation",
    "TestActorLifecycle",
    "TestConcurrency",
    "TestConflicts",
    "TestConsistentReads",
    "TestLifecycle",
    "TestLimits",
    "TestListKeys",
    "TestModel",
    "TestRoundTrips",
    "TestTransactions",
]
