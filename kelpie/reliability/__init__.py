"""Real faults on real backends: the scenarios behind ``tests/reliability`` and the soak.

Each module runs one kind of fault against a real backend and returns what it
saw, so the quick tests and ``python -m kelpie.reliability.soak`` share one
implementation (docs/reliability.md):

- ``redis_cuts``: connections cut by ``kelpie.testing.tcp_proxy`` at each point
  of a commit, single commits judged against what Redis holds, and the ledger
  through a cutting proxy;
- ``redis_restarts``: ``redis-server`` (AOF, ``appendfsync always``) SIGKILLed
  under the ledger and restarted;
- ``lmdb_kills``: a ledger writer process SIGKILLed at random moments, checked
  by a fresh process each time (``kelpie.testing.ledger_process``);
- ``transfer_kills``: processes moving money by ``ctx.send`` and firing
  reminders, SIGKILLed at random moments on LMDB and Redis
  (``kelpie.testing.transfer_node``), judged from the stored states;
- ``hostile``: hostile inputs to the public API.
"""
