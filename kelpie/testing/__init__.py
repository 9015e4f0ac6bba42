"""Test helpers shipped with kelpie: a redis-server harness and the storage conformance suite."""
