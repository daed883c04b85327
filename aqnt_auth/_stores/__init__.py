"""Key stores: the protocol, the embedded stores and ``open_store``."""
