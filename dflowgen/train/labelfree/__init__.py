"""Training without labels on the target domain: the label-free modes and the label-free target proxy.

* :mod:`.self_supervised`: photometric (census) and smoothness losses on frame pairs [SMURF, UFlow];
* :mod:`.pseudo_label`: a teacher's forward-backward-consistent flow as labels, with an optional
  contrastive term (:mod:`.contrastive`);
* :mod:`.distill`: self-distillation from a fixed teacher through strongly augmented views
  (:mod:`.strong_augment`);
* :mod:`.target_proxy`: ``dflowgen proxy``, a target proxy for DFlow made from unlabelled frames;
* :mod:`.jitter`: the colour jitter the networks see in these modes (never the frames a loss reads).
"""
