"""Optical-flow networks: RAFT and RAFT-small (:mod:`dflowgen.models.raft`)."""
