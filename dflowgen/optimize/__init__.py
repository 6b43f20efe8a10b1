"""DFlow: optimise every sample's θ against a frozen base and target proxy [DFlow §3.1].

Modules (import them directly; this package imports nothing, so ``dflowgen.recipes`` can
import ``optimize.config`` without a cycle):

* ``config``: ``OptimizeConfig`` and ``CopyAugmentConfig``, the ``[optimize]`` recipe section;
* ``proxies``: ``load_proxy``/``load_proxies``, frozen RAFT proxies;
* ``augment``: differentiable RAFT-style augmented copies with exact flow;
* ``objective``: per-sample proxy losses and the six task-loss forms;
* ``regularisers``: grid fold-over hinge and texture-noise L1;
* ``loop``: ``optimize_batch``, the per-sample optimisation of a batch.

Example::

    from dflowgen.optimize.config import OptimizeConfig
    from dflowgen.optimize.loop import optimize_batch
    from dflowgen.optimize.proxies import load_proxies

    config = OptimizeConfig(base_weights="raft-chairs", target_weights="raft-sintel")
    proxies = load_proxies(config, device)
    params = sample_params(render_config, bank, seed, indices)
    result = optimize_batch(params, indices, seed, bank, render_config, config, proxies, device)
    result.output.img1[result.kept]  # the samples that met config.keep_threshold
"""
