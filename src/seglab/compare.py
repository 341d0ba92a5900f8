"""``seglab compare [a=]<run id> [b=]<run id> [key=value ...]``: two runs class by class.

Reads both runs from MLflow (no re-training): each one's loss function, final ``val/loss`` and
``val/ce`` beside its worst class, then every class's IoU in both with the 95 % paired-bootstrap
interval of the difference over the split's images
(:func:`seglab.analysis.runs.compare_runs`), and the verdict: on which classes each run is
better, beyond what the choice of images explains.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis import runs as stored
from seglab.analysis.links import UiLinks, ui_address
from seglab.analysis.story import comparison_verdict, terminal_text
from seglab.cli import bad_input, read_options
from seglab.report import RUN_ID
from seglab.tracking.store import check_existing_store, resolve_uri

HELP = """seglab compare [a=]<run id> [b=]<run id> [key=value ...]

Two runs class by class, from MLflow: each run's loss beside its worst class, every class's IoU
in both with the 95 % paired-bootstrap interval of the difference (b - a) over the images of
the split, and on which classes each run is better."""


def options(words: Sequence[str]) -> list[str]:
    """The command's words as ``key=value`` options: the bare words are ``a`` and ``b``."""
    bare = [w for w in words if "=" not in w and not w.startswith("-")]
    if len(bare) > 2:
        raise ValueError(f"give two runs, got {bare}")
    named = iter(("a", "b"))
    return [f"{next(named)}={w}" if w in bare else w for w in words]


def run_line(label: str, run: Run, summary: pd.Series, links: UiLinks) -> str:
    """``a: <name> (<id>)  loss=ce  val/loss ...  val/ce ...  val/min_iou ... (<class>)``."""
    info = run.info
    return (
        f"{label}: {summary.run_name} ({info.run_id})  loss={summary['loss'] or '?'}  "
        f"{schema.VAL_LOSS} {summary.val_loss:.4f}  {schema.VAL_CE} {summary.val_ce:.4f}  "
        f"{schema.VAL_MIN_IOU} {summary.min_iou:.3f} ({summary.worst_class})\n"
        f"   {links.run(info.experiment_id, info.run_id)}"
    )


def compare(
    client: MlflowClient, a: str, b: str, split: str, resamples: int, seed: int, links: UiLinks
) -> str:
    """The comparison as terminal text."""
    for key, run_id in (("a", a), ("b", b)):
        if not RUN_ID.match(str(run_id)):
            raise ValueError(f"{key}={run_id!r} is not a run id (32 hex digits, as MLflow shows)")
    if split not in (schema.VAL, schema.TEST):
        raise ValueError(f"split={split!r}: use {schema.VAL} or {schema.TEST}")
    runs = []
    for key, run_id in (("a", a), ("b", b)):
        try:
            runs.append(client.get_run(run_id))
        except MlflowException:
            raise ValueError(f"{key}={run_id!r}: no such run in {client.tracking_uri}") from None
    history = stored.history(client, runs)
    summary = stored.summary(history, runs).set_index("run_id")
    table = stored.compare_runs(client, a, b, split, resamples, seed)
    lines = [
        run_line(key, run, summary.loc[run.info.run_id], links)
        for key, run in zip("ab", runs, strict=True)
    ]
    losses = [str(summary.loc[run_id, "loss"]) for run_id in (a, b)]
    if losses[0] != losses[1]:
        lines.append(
            f"The losses are of different functions ({', '.join(losses)}): their "
            f"{schema.VAL_LOSS} values are not on one scale; {schema.VAL_CE} is."
        )
    if warning := stored.pooling_warning(runs):
        lines.append(terminal_text(warning))
    lines += [
        "",
        f"IoU per class on the {split} split; difference = b - a with its 95 % paired-bootstrap "
        f"interval ({resamples} resamples of the images; images: those holding the class):",
        table.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        "",
        comparison_verdict(table),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the comparison; returns the exit status."""
    try:
        cfg = read_options("compare", HELP, argv, options)
        if cfg is None:
            return 0
        if cfg.a is None or cfg.b is None:
            raise ValueError("give two runs: seglab compare <run id> <run id>")
        uri, source = resolve_uri(cfg.tracking_uri)
        check_existing_store(uri, "tracking_uri" if cfg.tracking_uri else source)
        client = MlflowClient(uri)
        text = compare(
            client,
            str(cfg.a),
            str(cfg.b),
            str(cfg.split),
            int(cfg.resamples),
            int(cfg.seed),
            UiLinks(ui_address(uri)),
        )
    except ValueError as error:
        return bad_input("seglab compare", error)
    print(text)
    return 0


def cli() -> None:
    """``seglab compare``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
