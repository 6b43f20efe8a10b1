"""``dflowgen search``: evolve the renderer's hyper-parameters λ against a target, or report a search."""

from __future__ import annotations

from pathlib import Path

import click

from dflowgen.cli import cli
from dflowgen.data.spec import SPEC_HELP
from dflowgen.cli.options import parse_size
from dflowgen.recipes import load_recipe, with_overrides


@cli.command("search")
@click.option("--recipe", default="search-cpu", show_default=True, metavar="FILE|NAME",
              help="Search recipe: a recipe whose [render] is the base λ and [train] the candidate training, "
                   "plus a [search] table (bundled: search-tiny, search-cpu).")
@click.option("--target", "target_spec", default=None, metavar="SPEC",
              help=f"Target data the candidates are scored on, e.g. frames:my_video/ or sintel:ROOT:clean. "
                   f"{SPEC_HELP}.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study folder: outputs (candidates.csv, top-K.toml, best.json) and study.db.")
@click.option("--metric", type=click.Choice(["self-supervised", "supervised"]), default=None,
              help="Overrides search.metric: the label-free loss on the target frames, or AEPE (needs labels).")
@click.option("--init", default=None, metavar="CKPT",
              help="Weights each candidate's network starts from (path or weights-store name; default: scratch).")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage shared by workers, e.g. postgresql://user:pass@host/db for workers on several "
                   "machines (needs psycopg2-binary; see the README) (default: sqlite in OUT).")
@click.option("--study-name", "study_name", default=None, help="Study name in the storage (default: OUT's name).")
@click.option("--population", type=click.IntRange(min=1), default=None, help="Overrides search.population.")
@click.option("--generations", type=click.IntRange(min=1), default=None, help="Overrides search.generations.")
@click.option("--num-samples", "num_samples", type=click.IntRange(min=1), default=None,
              help="Overrides search.num_samples (M, samples rendered per candidate).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Overrides train.num_steps (K, training steps per candidate).")
@click.option("--size", default=None, metavar="WxH", help="Overrides render.width and render.height.")
@click.option("--candidates", "max_candidates", type=click.IntRange(min=1), default=None,
              help="Evaluate at most this many candidates in this process, then stop (the study stays resumable).")
@click.option("--device", default=None, help="Torch device (default: cuda if available, else cpu).")
@click.option("--assets", type=click.Path(path_type=Path), default=None,
              help="Folder of layer images and masks (default: the bundled bank).")
@click.option("--report", "report_folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="STUDY", help="Report the search in folder STUDY (table, best recipes, correlation plot); "
                                    "runs nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def search_command(recipe: str, target_spec: str | None, out: Path | None, metric: str | None, init: str | None,
                   storage: str | None, study_name: str | None, population: int | None, generations: int | None,
                   num_samples: int | None, steps: int | None, size: str | None, max_candidates: int | None,
                   device: str | None, assets: Path | None, report_folder: Path | None, quiet: bool) -> None:
    """Search λ, the ranges and probabilities scenes are drawn from, for the data that trains best for a target.

    Each candidate λ renders M samples, trains a small RAFT K steps on them and is scored on
    the target. An elitist genetic algorithm evolves POPULATION × GENERATIONS candidates; the
    state is an optuna study, so rerunning the command resumes it and several processes on
    the same --out (or --storage) share the work. The K best λ are written as recipes:

    \b
        dflowgen generate --mode random --recipe OUT/top-1.toml --num-samples 10000 --out data/
    """
    # The search stack (optuna, the trainer) loads only when this command runs.
    from dflowgen.search.run import report_study, run_search

    if report_folder is not None:
        report, base = report_study(report_folder, storage, study_name)
        click.echo(report.text(base))
        return
    if target_spec is None or out is None:
        raise click.UsageError("give --target SPEC and --out FOLDER to run a search, or --report STUDY")
    overrides: dict[str, object] = {"search.metric": metric, "search.population": population,
                                    "search.generations": generations, "search.num_samples": num_samples,
                                    "train.num_steps": steps}
    if size is not None:
        overrides["render.width"], overrides["render.height"] = parse_size(size)
    resolved = with_overrides(load_recipe(recipe),
                                     {key: value for key, value in overrides.items() if value is not None})
    summary = run_search(resolved, target_spec, out, storage=storage, study_name=study_name, init=init, device=device,
                         assets=assets, max_candidates=max_candidates, quiet=quiet)
    if not quiet:
        best = (f"; best metric {summary.best_value:.4g} (trial {summary.best_trial}), recipe {out / 'top-1.toml'}"
                if summary.best_value is not None else "")
        state = "complete" if summary.complete >= summary.budget else "incomplete (run again to continue)"
        click.echo(f"{out}: {summary.complete}/{summary.budget} candidates ({summary.evaluated_here} here), "
                   f"search {state}{best}")
