"""dflowgen: synthetic optical-flow training sets tuned to a target domain, and a RAFT trainer."""

__version__ = "0.1.0"
