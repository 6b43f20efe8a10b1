"""``dflowgen infer``: flow of a network on two images, folders of frames or videos, written as files."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.devices import resolve_device
from dflowgen.infer import DEFAULT_FORMATS, OUTPUT_FORMATS, open_inputs, parse_formats, run_inference
from dflowgen.models.registry import MODEL_NAMES, load_model


@cli.command("infer")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--ckpt", required=True, metavar="FILE|NAME",
              help="Weights: a checkpoint file, or any name `dflowgen weights list` shows "
                   "(e.g. demo-base, raft-sintel).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: OUT/<sequence>/<format>/<frame>.<ext>.")
@click.option("--format", "format_text", default=",".join(DEFAULT_FORMATS), show_default=True,
              help=f"Comma-separated outputs per pair, from {', '.join(OUTPUT_FORMATS)}: flo = Middlebury .flo, "
                   "kitti = 16-bit KITTI flow PNG, png = flow colours, viz = frame | flow colours side by side.")
@click.option("--video-out", "video_out", is_flag=True,
              help="Also write OUT/<sequence>/viz.mp4, the visualisations as a video (implies viz).")
@click.option("--iters", type=click.IntRange(min=1), default=12, show_default=True,
              help="GRU iterations of RAFT (32 gives the best accuracy, fewer are faster); FlowNets ignore it.")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=None,
              help="Architecture (default: recorded in the checkpoint, else read from its keys).")
@click.option("--max-size", "max_size", type=click.IntRange(min=16), default=None, metavar="PIXELS",
              help="Shrink frames whose longer side is above this, for speed; the flow is resized and scaled back.")
@click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pairs per forward pass.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def infer_command(inputs: tuple[str, ...], ckpt: str, out_dir: Path, format_text: str, video_out: bool, iters: int,
                  model: str | None, max_size: int | None, batch_size: int, device: str | None, quiet: bool) -> None:
    """Estimate optical flow on your own frames. INPUT is two images (one pair), folders of frames
    (natural order; every sub-folder holding images is a sequence), or video files (any format ffmpeg
    reads, decoded frame by frame). Each consecutive pair's flow is written in every --format; pairs
    whose files all exist are skipped, so rerunning finishes an interrupted run.

    \b
    Examples:
      dflowgen infer --ckpt demo-base frame1.png frame2.png --out flow/
      dflowgen infer --ckpt raft-sintel clip.mp4 --out flow/ --video-out --max-size 640
    """
    formats = parse_formats(format_text)
    sequences = open_inputs(list(inputs), exclude=out_dir)
    network = load_model(ckpt, model_name=model, map_location=resolve_device(device))
    result = run_inference(network, sequences, out_dir, formats, iters=iters, max_size=max_size,
                           batch_size=batch_size, video_out=video_out, progress=not quiet)
    click.echo(f"{out_dir}: {result.written} pairs written, {result.skipped} already there"
               + "".join(f"; {video}" for video in result.videos))
