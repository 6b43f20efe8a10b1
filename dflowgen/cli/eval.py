"""``dflowgen eval``: AEPE, 1/3/5-px rates and Fl-all of a checkpoint on labelled data specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dflowgen.cli import cli
from dflowgen.files import atomic_write_bytes
from dflowgen.data.scaled import ScaledPairs
from dflowgen.data.spec import SPEC_HELP, open_spec
from dflowgen.errors import DflowgenError
from dflowgen.evaluate import EvalResult, evaluate
from dflowgen.models.registry import MODEL_NAMES, load_model
from dflowgen.devices import resolve_device

# (result key, column title); every column is 8 characters wide.
_COLUMNS = (("epe", "EPE"), ("epe_pixels", "EPE/px"), ("1px", "<1px%"), ("3px", "<3px%"), ("5px", "<5px%"),
            ("fl_all", "Fl-all%"))
_HEADER = f"{'data':<44} {'pairs':>5} " + " ".join(f"{title:>8}" for _, title in _COLUMNS)


def _row(label: str, count: int | str, values: dict[str, Any]) -> str:
    figures = " ".join(f"{values[key]:>8.3f}" if key in values else " " * 8 for key, _ in _COLUMNS)
    return f"{label[:44]:<44} {count!s:>5} {figures}"


def format_table(results: list[tuple[str, EvalResult]], per_pair: bool) -> str:
    """The results as a text table: one row per dataset, and per pair when asked."""
    lines = [_HEADER]
    for spec, result in results:
        lines.append(_row(spec, result.aggregate["pairs"], result.aggregate))
        if per_pair:
            lines += [_row(f"  {pair.name}", "", {"epe": pair.epe, **pair.rates}) for pair in result.pairs]
    return "\n".join(lines)


@cli.command("eval")
@click.option("--ckpt", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights: a checkpoint file, or any name `dflowgen weights list` shows (e.g. raft-small).")
@click.option("--data", "data_specs", multiple=True, required=True, metavar="SPEC",
              help=f"Labelled data to evaluate on, repeatable. {SPEC_HELP}.")
@click.option("--iters", type=click.IntRange(min=1), default=32, show_default=True,
              help="GRU iterations of RAFT (official protocol: 32 for Sintel, 24 for KITTI and Chairs); "
                   "FlowNets ignore it.")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=None,
              help="Architecture (default: recorded in the checkpoint, else inferred from its keys).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write per-pair and aggregate results to this JSON file.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--per-pair", "per_pair", is_flag=True, help="Print every pair's figures too.")
@click.option("--valid-only", "valid_only", is_flag=True,
              help="On dense sets, measure only pixels their valid masks mark (e.g. Sintel's invalid/ masks); "
                   "default: every pixel, as the official protocol. Sparse sets (KITTI, HD1K) always use their masks.")
@click.option("--scale", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=1.0, show_default=True,
              help="Resize every pair (frames, flow and valid mask) by this factor first and measure at that size, "
                   "e.g. 0.3125 for networks trained on 160×128 renders (reproduce-mini).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(ckpt: Path, data_specs: tuple[str, ...], iters: int, model: str | None, json_path: Path | None,
                 device: str | None, per_pair: bool, valid_only: bool, scale: float, quiet: bool) -> None:
    """Evaluate CKPT on each data SPEC: end-point error (mean over pairs, and over pixels), the
    percentage of pixels within 1/3/5 px, and KITTI's Fl-all. Images are padded to a multiple of 8
    like the official evaluation (centred; KITTI-style bottom padding for sparse sets)."""
    torch_device = resolve_device(device)
    network = load_model(ckpt, model_name=model, map_location=torch_device)
    opened = [open_spec(spec) for spec in data_specs]
    sparse = [spec for spec, data in zip(data_specs, opened) if data.sparse]
    if scale != 1.0 and sparse:
        raise DflowgenError(f"--scale resizes dense flow only; {sparse[0]} is sparse (its valid points cannot be "
                            "interpolated): evaluate it at full size")
    results = []
    for spec, data in zip(data_specs, opened):
        dataset = ScaledPairs(data.dataset, scale) if scale != 1.0 else data.dataset
        result = evaluate(network, dataset, iters, all_pixels=not data.sparse and not valid_only,
                          pad_mode="kitti" if data.sparse else "sintel", progress=not quiet, desc=spec)
        results.append((spec, result))
    click.echo(format_table(results, per_pair))
    if json_path is not None:
        report = {"checkpoint": str(ckpt), "model": network.model_name, "iters": iters, "scale": scale,
                  "datasets": [{"spec": spec, **result.to_dict()} for spec, result in results]}
        try:
            atomic_write_bytes(json_path, (json.dumps(report, indent=1) + "\n").encode())
        except OSError as error:
            raise DflowgenError(f"cannot write {json_path}: {error.strerror}") from None
