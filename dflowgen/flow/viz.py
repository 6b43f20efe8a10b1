"""Flow → colour image with the Baker et al. (Middlebury) colour wheel."""

from __future__ import annotations

import numpy as np

# Hue segments of the wheel and their lengths: red→yellow→green→cyan→blue→magenta→red.
# In each segment one channel is full, one ramps up or down, one is zero.
_SEGMENTS = ((15, "full", "up", "zero"), (6, "down", "full", "zero"), (4, "zero", "full", "up"),
             (11, "zero", "down", "full"), (13, "up", "zero", "full"), (6, "full", "zero", "down"))


def color_wheel() -> np.ndarray:
    """The 55×3 colour wheel (float, 0..255) of Baker et al."""
    blocks = []
    for count, *channels in _SEGMENTS:
        ramp = np.arange(count) / count * 255
        values = {"full": np.full(count, 255.0), "zero": np.zeros(count), "up": ramp, "down": 255 - ramp}
        blocks.append(np.stack([values[c] for c in channels], axis=1))
    return np.concatenate(blocks, axis=0)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code an H×W×2 flow as an H×W×3 uint8 image.

    Hue gives direction, saturation the magnitude relative to ``max_magnitude``
    (default: the largest finite magnitude in the flow). Non-finite vectors are black.
    """
    flow = np.asarray(flow, dtype=np.float64)
    finite = np.isfinite(flow).all(axis=2)
    u = np.where(finite, flow[..., 0], 0.0)
    v = np.where(finite, flow[..., 1], 0.0)
    magnitude = np.sqrt(u**2 + v**2)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.size else 0.0
    scale = max(max_magnitude, 1e-8)
    u, v, magnitude = u / scale, v / scale, magnitude / scale

    wheel = color_wheel()
    ncols = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi
    position = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % ncols
    frac = (position - k0)[..., None]
    color = ((1 - frac) * wheel[k0] + frac * wheel[k1]) / 255.0
    inside = (magnitude <= 1)[..., None]
    radius = np.clip(magnitude, 0, 1)[..., None]
    color = np.where(inside, 1 - radius * (1 - color), color * 0.75)
    color = np.where(finite[..., None], color, 0.0)
    return np.clip(np.floor(255 * color), 0, 255).astype(np.uint8)
