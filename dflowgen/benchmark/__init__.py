"""The known-target benchmark: hidden target domains whose truth we know, and every method of the tool against them.

Modules (import them directly; this package imports nothing, so :mod:`dflowgen.recipes` can
import ``benchmark.config`` without a cycle):

* ``config``: ``BenchmarkConfig``, the ``[benchmark]`` recipe section;
* ``pipeline``: ``run_benchmark``, the whole run (base, target sets, proxies, searches, rows, evaluation);
* ``report``: ``table.md``, ``results.json`` and the plots.

Example::

    from dflowgen.recipes import load_recipe
    from dflowgen.benchmark.pipeline import run_benchmark

    summary = run_benchmark(load_recipe("known-target-mini"), "results/known-target-mini")
    print(summary.table)
"""
