"""Search for the renderer hyper-parameters λ that make the best training data for a target [AutoFlow, S-AF].

``config`` (the ``[search]`` recipe settings), ``space`` (λ derived from the render config), ``evolution`` (the optuna GA sampler), ``target`` and ``candidate``
(scoring one λ), ``run`` (the study and its workers), ``report`` (outputs and the report).

This package imports nothing at load time, so :mod:`dflowgen.recipes` imports
:mod:`dflowgen.recipes.search` without a cycle.
"""
