"""Parsers for option values that several commands share."""

from __future__ import annotations

from dflowgen.errors import DflowgenError


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (e.g. ``"320x240"``) as (width, height), both positive."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or int(width) < 1 or int(height) < 1:
        raise DflowgenError(f"--size must be WIDTHxHEIGHT with positive integers (e.g. 320x240), got {text!r}")
    return int(width), int(height)
