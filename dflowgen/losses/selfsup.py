"""Self-supervised flow losses in SMURF's forms [SMURF, Stone et al. 2021; UFlow, Jonschkowski et al. 2020].

Without labels, a flow field is judged by three terms:

* **photometric** — the census loss: frame 2 warped back by the forward flow should match
  frame 1 in its 7×7 census transform (robust to brightness changes), counted only where
  the pixel is visible in both frames (occlusions estimated from the flows themselves:
  a forward-backward consistency check or the range map of the backward flow);
* **smoothness** — edge-aware first- and second-order smoothness: flow gradients (or
  curvature) are penalised except where the image has edges;
* **self-distillation** — the flow predicted on a crop of the frames (resized back to full
  size) should equal the full-frame prediction cropped the same way, where the full-frame
  prediction is forward-backward consistent and the crop's is not.

``L = w_census·L_census + w_smooth1·L_smooth1 + w_smooth2·L_smooth2 + w_distill·L_distill``
(:func:`self_supervised_terms`, weights in :class:`SelfSupervisedLossConfig`).

Conventions: images are ``B×3×H×W`` in [0, 1]; flows ``B×2×H×W`` in pixels, channel 0 = x;
``flow_fw`` maps frame 1 to frame 2 and ``flow_bw`` frame 2 to frame 1; masks are
``B×1×H×W`` floats. Robust penalties are offset so they are exactly zero at zero (UFlow's
``(|x| + ε)^q`` and ``sqrt(x² + ε²)`` without the constant): the gradients are unchanged.
Occlusion and distillation masks carry no gradient, as in SMURF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import remap

from dflowgen.fields import check_non_negative, check_positive
from dflowgen.shapes import check_shape

OcclusionMethod = Literal["range-map", "forward-backward", "none"]
EdgeWeighting = Literal["exponential", "gaussian"]


FB_ALPHA1 = 0.01
FB_ALPHA2 = 0.5
"""The forward-backward consistency test's constants (UnFlow, Meister et al. 2018), shared by the
self-supervised loss, pseudo-labelling and distillation: a pixel is consistent where
``|F_fw + F_bw(p + F_fw)|² <= FB_ALPHA1·(|F_fw|² + |F_bw(p + F_fw)|²) + FB_ALPHA2``."""


@dataclass(frozen=True)
class SelfSupervisedLossConfig:
    """Weights and constants of the self-supervised loss; defaults are SMURF's (Sintel/KITTI flags).

    ``occlusion``: ``"range-map"`` (SMURF's default, Wang et al.: a pixel of frame 1 that no
    pixel of frame 2 maps back to is occluded), ``"forward-backward"`` (occluded where
    ``|F_fw + F_bw(p + F_fw)|² > fb_alpha1·(|F_fw|² + |F_bw(p + F_fw)|²) + fb_alpha2``), or
    ``"none"``. ``edge_constant`` scales image gradients of [0, 1] images in the edge
    weights ``exp(-mean_c |c·∇I|)`` (or ``exp(-mean_c (c·∇I)²)`` with ``"gaussian"``).
    ``distill_crop`` is the fraction of the height and width removed on each side for the
    self-distillation crop (SMURF removes 64 px of 296×696, i.e. 9–22 %).
    ``distill_sigma_teacher``/``_student`` scale the Gaussian forward-backward confidence
    ``exp(-|F_fw + F_bw(p + F_fw)|² / (σ²·(H² + W²)))`` of the teacher and the student.
    """

    weight_census: float = 1.0
    weight_smooth1: float = 0.0
    weight_smooth2: float = 2.0
    weight_distill: float = 0.3
    census_patch: int = 7
    occlusion: OcclusionMethod = "range-map"
    fb_alpha1: float = FB_ALPHA1
    fb_alpha2: float = FB_ALPHA2
    edge_weighting: EdgeWeighting = "exponential"
    edge_constant: float = 150.0
    distill_crop: float = 0.15
    distill_sigma_teacher: float = 0.003
    distill_sigma_student: float = 0.03

    def __post_init__(self) -> None:
        check_non_negative(self, "weight_census", "weight_smooth1", "weight_smooth2", "weight_distill", "fb_alpha1",
                           "fb_alpha2", "edge_constant")
        if self.census_patch < 3 or self.census_patch % 2 == 0:
            raise ValueError(f"census_patch must be an odd number >= 3, got {self.census_patch}")
        if not 0.0 <= self.distill_crop < 0.5:
            raise ValueError(f"distill_crop must be in [0, 0.5), got {self.distill_crop}")
        check_positive(self, "distill_sigma_teacher", "distill_sigma_student")


def robust_power(x: torch.Tensor, eps: float = 0.01, q: float = 0.4) -> torch.Tensor:
    """DDFlow's robust penalty ``(|x| + eps)^q``, minus its value at 0."""
    return (x.abs() + eps).pow(q) - eps**q


def robust_l1(x: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """Charbonnier ``sqrt(x² + eps²)``, minus its value at 0."""
    return (x.square() + eps**2).sqrt() - eps


def flow_warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warp: ``warped(p) = image(p + flow(p))``, bilinear, zero outside the frame.

    Args:
        image: ``B×C×H×W`` (frame 2, or the backward flow).
        flow: ``B×2×H×W`` pixels (the forward flow of frame 1).

    Returns:
        ``warped`` (``B×C×H×W``) and ``inside`` (``B×1×H×W``, 1 where ``p + flow(p)`` lies in
        the frame).
    """
    sizes = check_shape("flow", flow, "B×2×H×W")
    check_shape("image", image, "B×C×H×W", sizes)
    _, _, height, width = flow.shape
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=flow.device, dtype=flow.dtype)
    target_x = grid[..., 0] + flow[:, 0]
    target_y = grid[..., 1] + flow[:, 1]
    warped = remap(image, target_x, target_y, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (target_x >= 0) & (target_x <= width - 1) & (target_y >= 0) & (target_y <= height - 1)
    return warped, inside[:, None].to(flow.dtype)


def range_map(flow_bw: torch.Tensor) -> torch.Tensor:
    """``B×1×H×W``: how much of frame 2 lands on each pixel of frame 1 through ``flow_bw``.

    Every pixel ``q`` of frame 2 is splatted onto ``q + flow_bw(q)`` with bilinear weights
    (weights falling outside the frame are dropped); zero flow gives all ones.
    """
    batch, _, height, width = flow_bw.shape
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=flow_bw.device, dtype=flow_bw.dtype)
    target = grid.permute(0, 3, 1, 2) + flow_bw
    base = target.floor()
    frac = target - base
    base = base.long()
    counts = flow_bw.new_zeros(batch * height * width)
    batch_offset = (torch.arange(batch, device=flow_bw.device) * height * width).view(batch, 1, 1)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = base[:, 0] + dx, base[:, 1] + dy
            weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            index = batch_offset + y.clamp(0, height - 1) * width + x.clamp(0, width - 1)
            counts.scatter_add_(0, index.reshape(-1), (weight * inside).reshape(-1))
    return counts.view(batch, 1, height, width)


def occlusion_forward_backward(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha1: float = FB_ALPHA1,
                               alpha2: float = FB_ALPHA2) -> torch.Tensor:
    """``B×1×H×W``, 1 where the forward-backward check fails (occluded) [Sundaram et al. 2010; UnFlow]."""
    flow_bw_at_target, _ = flow_warp(flow_bw, flow_fw)
    mismatch = (flow_fw + flow_bw_at_target).square().sum(1, keepdim=True)
    magnitude = (flow_fw.square() + flow_bw_at_target.square()).sum(1, keepdim=True)
    return (mismatch > alpha1 * magnitude + alpha2).to(flow_fw.dtype)


def occlusion_range_map(flow_bw: torch.Tensor) -> torch.Tensor:
    """``B×1×H×W`` in [0, 1], ``1 − min(range_map, 1)``: pixels of frame 1 nothing of frame 2 maps back to."""
    return 1.0 - range_map(flow_bw).clamp(0.0, 1.0)


def occlusion_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, method: OcclusionMethod = "range-map",
                   alpha1: float = FB_ALPHA1, alpha2: float = FB_ALPHA2) -> torch.Tensor:
    """``B×1×H×W`` occlusion estimate of frame 1 (1 = occluded) by ``method``, without gradient."""
    with torch.no_grad():
        if method == "range-map":
            return occlusion_range_map(flow_bw)
        if method == "forward-backward":
            return occlusion_forward_backward(flow_fw, flow_bw, alpha1, alpha2)
        if method == "none":
            return flow_fw.new_zeros(flow_fw.shape[0], 1, *flow_fw.shape[2:])
    raise ValueError(f"unknown occlusion method {method!r}")


def census_transform(image: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """``B×P²×H×W`` soft census signature of ``B×3×H×W`` [0, 1] images (``P = patch``).

    Each entry is ``d / sqrt(0.81 + d²)`` for ``d`` = neighbour − centre grey level in
    [0, 255] (DDFlow's constants); neighbours outside the frame read 0.
    """
    grey = rgb_to_grayscale(image) * 255.0
    batch, _, height, width = grey.shape
    neighbours = F.unfold(grey, patch, padding=patch // 2).view(batch, patch * patch, height, width)
    difference = neighbours - grey
    return difference / (0.81 + difference.square()).sqrt()


def soft_hamming(census_a: torch.Tensor, census_b: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """``B×1×H×W`` soft Hamming distance ``Σ_k d²/(threshold + d²)`` between census signatures."""
    squared = (census_a - census_b).square()
    return (squared / (threshold + squared)).sum(1, keepdim=True)


def census_distance(image1: torch.Tensor, image2_warped: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """``B×1×H×W`` ``robust_power(soft_hamming(census(I1), census(warped I2)))``, the census term of each pixel."""
    return robust_power(soft_hamming(census_transform(image1, patch), census_transform(image2_warped, patch)))


def _inner(like: torch.Tensor, patch: int) -> torch.Tensor:
    """1 on every pixel but the outer ``patch // 2``, where the census reads padding."""
    border = patch // 2
    inner = torch.zeros_like(like)
    inner[..., border:-border, border:-border] = 1.0
    return inner


def census_loss(image1: torch.Tensor, image2_warped: torch.Tensor, mask: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """Scalar masked mean of :func:`census_distance`.

    Args:
        image1: ``B×3×H×W`` in [0, 1].
        image2_warped: ``B×3×H×W``, frame 2 warped back by the forward flow.
        mask: ``B×1×H×W``, 1 where the pixel counts (visible and inside the frame); its
            outer ``patch // 2`` pixels are ignored, where the census reads padding.
    """
    weight = (mask * _inner(mask, patch)).detach()
    return (census_distance(image1, image2_warped, patch) * weight).sum() / (weight.sum() + 1e-6)


def census_everywhere(image1: torch.Tensor, image2_warped: torch.Tensor, mask: torch.Tensor,
                      patch: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """The census term over every pixel, and the share of pixels ``mask`` leaves out: two scalars.

    A pixel ``mask`` scores costs its warped match; one it leaves out (occluded, or sent out of
    the frame) costs the worst match there is. The masked mean of :func:`census_loss` (what
    training minimises) falls to 0 when a network sends every pixel out of view, since the mask
    then scores none; as a measure of a trained network it must not reward that. Charging a
    left-out pixel its unwarped match instead is not enough: on small motion under fog and
    noise that costs less than an imperfect warped match (measured on the known-target
    benchmark's drift-fog target), so candidates that explain nothing still ranked first.

    Args:
        image1: ``B×3×H×W`` in [0, 1]; image2_warped: frame 2 warped back by the forward flow.
        mask: ``B×1×H×W``, 1 where the warped match counts.
    """
    inner = _inner(mask, patch)
    matched = census_distance(image1, image2_warped, patch)
    # Every neighbour's sign flipped: the soft Hamming distance's supremum (the centre entry is always 0).
    worst = robust_power(matched.new_tensor(float(patch * patch - 1)))
    per_pixel = mask * matched + (1.0 - mask) * worst
    pixels = inner.sum()
    return (per_pixel * inner).sum() / pixels, ((1.0 - mask) * inner).sum() / pixels


def _edge_weights(image_gradient: torch.Tensor, constant: float, weighting: EdgeWeighting) -> torch.Tensor:
    """``B×1×…`` weights ``exp(-mean_c |c·g|)`` (exponential) or ``exp(-mean_c (c·g)²)`` (gaussian)."""
    scaled = constant * image_gradient
    penalty = scaled.abs() if weighting == "exponential" else scaled.square()
    return torch.exp(-penalty.mean(1, keepdim=True))


def smoothness_loss(image: torch.Tensor, flow: torch.Tensor, order: Literal[1, 2] = 2, edge_constant: float = 150.0,
                    edge_weighting: EdgeWeighting = "exponential") -> torch.Tensor:
    """Scalar edge-aware smoothness of ``B×2×H×W`` flow, weighted by ``B×3×H×W`` [0, 1] image edges.

    ``order=1`` penalises ``∂F/∂x``, ``∂F/∂y`` (zero for constant flow); ``order=2`` the
    non-mixed second derivatives ``∂²F/∂x²``, ``∂²F/∂y²`` (zero for any linear ramp), with
    the edge weights of image differences across the same two-pixel span.
    """
    if order == 1:
        flow_dx, flow_dy = flow[..., :, 1:] - flow[..., :, :-1], flow[..., 1:, :] - flow[..., :-1, :]
        image_dx, image_dy = image[..., :, 1:] - image[..., :, :-1], image[..., 1:, :] - image[..., :-1, :]
    elif order == 2:
        flow_dx = flow[..., :, 2:] - 2 * flow[..., :, 1:-1] + flow[..., :, :-2]
        flow_dy = flow[..., 2:, :] - 2 * flow[..., 1:-1, :] + flow[..., :-2, :]
        image_dx, image_dy = image[..., :, 2:] - image[..., :, :-2], image[..., 2:, :] - image[..., :-2, :]
    else:
        raise ValueError(f"smoothness order must be 1 or 2, got {order}")
    weight_x = _edge_weights(image_dx, edge_constant, edge_weighting)
    weight_y = _edge_weights(image_dy, edge_constant, edge_weighting)
    return ((weight_x * robust_l1(flow_dx)).mean() + (weight_y * robust_l1(flow_dy)).mean()) / 2


def distillation_crop(tensor: torch.Tensor, fraction: float, is_flow: bool = False) -> torch.Tensor:
    """Remove ``fraction`` of the height and width on every side and resize back (bilinear) to ``H×W``.

    Flow (``is_flow``) is scaled by the resize factor of each axis, so a cropped teacher flow
    is in the student's pixels.
    """
    height, width = tensor.shape[-2:]
    top, left = round(fraction * height), round(fraction * width)
    crop = tensor[..., top:height - top, left:width - left]
    resized = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    if is_flow:
        scale = resized.new_tensor([width / crop.shape[-1], height / crop.shape[-2]]).view(1, 2, 1, 1)
        resized = resized * scale
    return resized


def fb_confidence(flow_fw: torch.Tensor, flow_bw: torch.Tensor, sigma: float) -> torch.Tensor:
    """``B×1×H×W`` Gaussian forward-backward consistency times the in-frame mask (SMURF's self-supervision mask)."""
    height, width = flow_fw.shape[-2:]
    flow_bw_at_target, inside = flow_warp(flow_bw, flow_fw)
    mismatch = (flow_fw + flow_bw_at_target).square().sum(1, keepdim=True)
    return torch.exp(-mismatch / (sigma**2 * (height**2 + width**2))) * inside


def distillation_weights(teacher_fw: torch.Tensor, teacher_bw: torch.Tensor, student_fw: torch.Tensor,
                         student_bw: torch.Tensor, config: SelfSupervisedLossConfig) -> torch.Tensor:
    """``B×1×H×W`` weights in the crop's frame: teacher confident (cropped) × student not confident.

    Teacher flows are the full-frame predictions; student flows are the predictions on the
    :func:`distillation_crop` of the frames.
    """
    with torch.no_grad():
        teacher = distillation_crop(fb_confidence(teacher_fw, teacher_bw, config.distill_sigma_teacher),
                                    config.distill_crop)
        student = 1.0 - fb_confidence(student_fw, student_bw, config.distill_sigma_student)
        return teacher * student


def distillation_loss(flow_student: torch.Tensor, flow_teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scalar ``mean(weight · robust_l1(teacher − student))`` over ``B×2×H×W``; no gradient reaches the teacher.

    ``flow_teacher`` is already in the student's frame (:func:`distillation_crop` with ``is_flow``).
    """
    return (weight.detach() * robust_l1(flow_teacher.detach() - flow_student)).mean()


def self_supervised_terms(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                          crop_fw: torch.Tensor, crop_bw: torch.Tensor,
                          config: SelfSupervisedLossConfig = SelfSupervisedLossConfig(),
                          everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The weighted loss and its terms, both temporal directions averaged (SMURF's unsupervised loss).

    Args:
        image1, image2: ``B×3×H×W`` frames in [0, 1].
        flow_fw, flow_bw: ``B×2×H×W`` predictions for (image1, image2) and (image2, image1);
            they are the student of the census and smoothness terms and, detached, the
            teacher of the distillation term.
        crop_fw, crop_bw: ``B×2×H×W`` predictions for the :func:`distillation_crop` of
            (image1, image2) and (image2, image1).
        config: weights and constants.
        everywhere: measure rather than train: the census term counts every pixel
            (:func:`census_everywhere`), and ``unscored`` (the share of pixels the occlusion and
            frame masks leave out) is returned too.

    Returns:
        ``census``, ``smooth1``, ``smooth2``, ``distill`` (unweighted scalars) and ``total``
        (the weighted sum); with ``everywhere``, also ``unscored``.
    """
    sizes = check_shape("image1", image1, "B×3×H×W")
    check_shape("image2", image2, "B×3×H×W", sizes)
    check_shape("flow_fw", flow_fw, "B×2×H×W", sizes)
    check_shape("flow_bw", flow_bw, "B×2×H×W", sizes)
    crop_sizes = check_shape("crop_fw", crop_fw, "B×2×h×w", sizes)
    check_shape("crop_bw", crop_bw, "B×2×h×w", crop_sizes)
    frames = torch.cat([image1, image2])
    others = torch.cat([image2, image1])
    flows = torch.cat([flow_fw, flow_bw])
    reverse = torch.cat([flow_bw, flow_fw])
    warped, inside = flow_warp(others, flows)
    visible = 1.0 - occlusion_mask(flows, reverse, config.occlusion, config.fb_alpha1, config.fb_alpha2)
    if everywhere:
        census, unscored = census_everywhere(frames, warped, visible * inside, config.census_patch)
        terms = {"census": census, "unscored": unscored}
    else:
        terms = {"census": census_loss(frames, warped, visible * inside, config.census_patch)}
    for order in (1, 2):
        terms[f"smooth{order}"] = smoothness_loss(frames, flows, order, config.edge_constant, config.edge_weighting)
    crops = torch.cat([crop_fw, crop_bw])
    weight = distillation_weights(flows, reverse, crops, torch.cat([crop_bw, crop_fw]), config)
    terms["distill"] = distillation_loss(crops, distillation_crop(flows, config.distill_crop, is_flow=True), weight)
    terms["total"] = (config.weight_census * terms["census"] + config.weight_smooth1 * terms["smooth1"]
                      + config.weight_smooth2 * terms["smooth2"] + config.weight_distill * terms["distill"])
    return terms
