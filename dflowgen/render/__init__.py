"""The differentiable generator: scene parameters θ → (img1, img2, flow) [DFlow §3.2].

    from dflowgen.assets import load_layer_bank
    from dflowgen.render import RenderConfig, render, sample_params

    config = RenderConfig(width=128, height=96)
    bank = load_layer_bank(size=config.canvas_size)
    params = sample_params(config, bank, seed=0, indices=range(4))
    out = render(params, bank, config)  # out.img1, out.img2, out.flow, out.valid
"""

from dflowgen.render.config import RenderConfig, WarpRanges
from dflowgen.render.params import LEARNABLE_GROUPS, SceneParams, sample_params
from dflowgen.render.pipeline import RenderOutput, render

__all__ = ["LEARNABLE_GROUPS", "RenderConfig", "RenderOutput", "SceneParams", "WarpRanges", "render", "sample_params"]
