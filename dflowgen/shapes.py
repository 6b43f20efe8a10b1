"""Shape checks at the door of the pure tensor functions: a ``ValueError`` that names the argument.

Patterns are written as the docstrings write shapes, ``"B×2×H×W"``: a number must match
exactly, a letter binds to the size it first meets and must be the same everywhere after,
``*`` matches any size. The user-facing error type (:class:`dflowgen.errors.DflowgenError`)
stays for files and user input; a wrong shape here is a programming error.
"""

from __future__ import annotations

import torch


def check_shape(name: str, tensor: torch.Tensor, pattern: str, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Raise ``ValueError`` unless ``tensor`` has the shape ``pattern``; returns the letters' sizes.

    ``sizes`` carries letters bound by earlier checks (pass the returned dict on), so that
    ``B`` and ``H×W`` must agree across the arguments of one call.
    """
    known = dict(sizes or {})
    bound = dict(known)
    dims = pattern.split("×")
    shape = tuple(tensor.shape)
    fits = len(shape) == len(dims) and all(
        dim == "*" or (int(dim) == size if dim.isdigit() else bound.setdefault(dim, size) == size)
        for dim, size in zip(dims, shape)
    )
    if not fits:
        where = ", ".join(f"{letter}={size}" for letter, size in known.items() if letter in dims)
        raise ValueError(f"{name} must be {pattern}{f' with {where}' if where else ''}, got shape {shape}")
    return bound
