"""``python -m seglab.analysis.overview <tracking uri>``: what ``make ui`` prints before it serves
the store, so the story is one click away: each experiment's runs page and, for its latest sweep,
the parent run's page and the verdict with its links (:mod:`seglab.analysis.story`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis import runs as stored
from seglab.analysis import story
from seglab.analysis.links import UiLinks, ui_address


def latest_sweep_verdict(client: MlflowClient, experiment_id: str, links: UiLinks) -> list[str]:
    """The latest sweep of an experiment: its parent's page and the verdict of its finished
    runs, as terminal lines (none without a sweep)."""
    parents = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{schema.TAG_SWEEP}` = '{schema.SWEEP_PARENT}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        return []
    parent = parents[0].info
    children = stored.child_runs(client, parent.run_id)
    history = stored.history(client, children)
    finished = stored.grouped_summary(history, children).query("status == 'FINISHED'")
    verdict = story.runs_verdict(history, finished, children, links)
    return [
        f"  latest sweep, {parent.run_name}: {links.run(experiment_id, parent.run_id)}",
        *(f"  {story.terminal_text(paragraph)}" for paragraph in verdict),
    ]


def overview(client: MlflowClient, links: UiLinks) -> list[str]:
    """For each experiment that holds runs: its runs page, then :func:`latest_sweep_verdict`."""
    lines = []
    for experiment in client.search_experiments():
        eid = str(experiment.experiment_id)
        if not client.search_runs([eid], max_results=1):
            continue
        lines.append(f"{experiment.name}: {links.experiment(eid)}")
        lines += latest_sweep_verdict(client, eid, links)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Prints :func:`overview` of the store the one argument names."""
    (uri,) = sys.argv[1:] if argv is None else argv
    print(*overview(MlflowClient(uri), UiLinks(ui_address(uri))), sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
