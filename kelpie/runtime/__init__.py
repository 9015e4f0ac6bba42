"""The runtime: ``Runtime``, activations and mailboxes."""

from kelpie.runtime.activation import IDEMPOTENCY_WINDOW
from kelpie.runtime.runtime import Runtime

__all__ = ["IDEMPOTENCY_WINDOW", "Runtime"]
