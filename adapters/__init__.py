"""Framework adapters, installed as ``aqnt_auth.adapters``.

Each submodule imports its framework; importing this package imports none.
Adapters translate between a framework and the core and hold no decision
logic of their own.
"""
