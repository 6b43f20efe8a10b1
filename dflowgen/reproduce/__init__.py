"""Reproduce the papers' key comparison at a size the hardware runs: does DFlow data train better networks?

Modules (import them directly; this package imports nothing, so :mod:`dflowgen.recipes` can
import ``reproduce.config`` without a cycle):

* ``config``: ``ReproduceConfig``, the ``[reproduce]`` recipe section;
* ``data``: the data root, the Sintel scene split (resized by ``sintel_scale``), weights look-up;
* ``stages``: completion markers that make every stage resumable and skipped once done;
* ``pipeline``: ``run_reproduction``, the whole run (target proxy, sets, training, evaluation);
* ``report``: ``table.md``, ``results.json`` and the plots.

Example::

    from dflowgen.recipes import load_recipe
    from dflowgen.reproduce.pipeline import run_reproduction

    summary = run_reproduction(load_recipe("reproduce-mini"), "results/reproduce-mini")
    print(summary.table)
"""
