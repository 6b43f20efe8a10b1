"""Optical flow: file formats, visualisation and error metrics."""
