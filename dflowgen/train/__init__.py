"""RAFT training, supervised or label-free: config, data order, loop, modes, checkpoints, logging, torchrun, proxies.

Import the parts from their modules (``dflowgen.train.trainer.train``, ...). This package
imports nothing itself: :mod:`dflowgen.recipes` imports :mod:`dflowgen.train.config`, and the
trainer imports :mod:`dflowgen.recipes`, so importing the trainer here would make a cycle.
"""
