"""The sweep report on a store written by hand: 2 configurations x 3 seeds and a failed run, with
known values, so every number the report prints can be checked (no training)."""

import base64
import json
import math
import re
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import chromium, mlflow_serving
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from seglab.analysis.report import markdown, seed_tables, with_intervals
from seglab.core.per_image import PerImageCounts
from seglab.report import build_report, main

NAN = float("nan")
TRAINING = "workflowType=machine_learning"
CLASSES = ["bg", "rare"]
# configuration -> per seed: (final val loss, rare IoU); bg IoU is 0.95 throughout
RUNS = {
    "none": [(0.020, 0.00), (0.021, 0.01), (0.019, 0.02)],
    "median_frequency": [(0.030, 0.50), (0.032, 0.60), (0.029, 0.70)],
}
IMAGES = [f"img{i}.png" for i in range(20)]


def per_image_frame(rare_found: float) -> pd.DataFrame:
    """20 images with 10 rare pixels each; ``rare_found`` of them found in every image."""
    tp_rare = round(10 * rare_found)
    counts = PerImageCounts(
        tuple(IMAGES),
        np.array([[90, tp_rare]] * 20),
        np.array([[10 - tp_rare, 0]] * 20),
        np.array([[0, 10 - tp_rare]] * 20),
    )
    return counts.frame(CLASSES, "val")


def write_run(client, experiment, folder, scheme, seed, loss, rare):
    """One finished hand-made run of configuration ``class_weights=<scheme>``."""
    run = client.create_run(
        experiment,
        run_name=f"class_weights={scheme},trainer.seed={seed}",
        tags={
            "seglab.loss": "ce",
            "seglab.class_weights": scheme,
            "seglab.augment": "none",
            "seglab.class_names": json.dumps(CLASSES),
            "seglab.worst_class": "rare",
            "seglab.hidden_failure_classes": "rare" if rare < 0.1 else "",
        },
    )
    run_id = run.info.run_id
    client.log_param(run_id, "class_weights.scheme", scheme)
    client.log_param(run_id, "trainer.seed", str(seed))
    final = {
        "val/loss": loss,
        "val/ce": loss * 1.5,
        "val/miou": (0.95 + rare) / 2,
        "val/min_iou": rare,
        "val/pixel_acc": 0.99 - rare / 100,
        "val/class_acc": 0.9 + rare / 10,
        "val/iou/bg": 0.95,
        "val/iou/rare": rare,
    }
    first = {key: value * 0.5 for key, value in final.items()}
    first["val/loss"] = loss * 3
    # The test split, scored with the best checkpoint (epoch 2): rare a little lower.
    test = {
        "test/miou": (0.9 + 0.8 * rare) / 2,
        "test/min_iou": 0.8 * rare,
        "test/pixel_acc": 0.98 - rare / 100,
        "test/class_acc": 0.85 + rare / 10,
        "test/iou/bg": 0.9,
        "test/iou/rare": 0.8 * rare,
    }
    metrics = [Metric(k, v, 0, 1) for k, v in first.items()]
    metrics += [Metric(k, v, 0, 2) for k, v in {**final, **test}.items()]
    client.log_batch(run_id, metrics=metrics)
    (folder / run_id).mkdir()
    per_image_frame(rare).to_parquet(folder / run_id / "val.parquet")
    client.log_artifact(run_id, str(folder / run_id / "val.parquet"), "per_image")
    client.set_terminated(run_id, "FINISHED")
    return client.get_run(run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("store")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("hand", (tmp_path / "artifacts").as_uri())
    runs = [
        write_run(client, experiment, tmp_path, scheme, seed, loss, rare)
        for scheme, seeds in RUNS.items()
        for seed, (loss, rare) in enumerate(seeds)
    ]
    failed = client.create_run(experiment, run_name="broken", tags={"seglab.loss": "ce"})
    client.log_metric(failed.info.run_id, "val/loss", 0.001, step=1)
    client.set_terminated(failed.info.run_id, "FAILED")
    runs.append(client.get_run(failed.info.run_id))
    return tmp_path, client, runs


@pytest.fixture(scope="module")
def report(store):
    _, client, runs = store
    return build_report(client, runs)


EMBEDDED_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def test_the_whole_report_reads_as_reviewed(report, golden):
    """Every heading, sentence, column and number of the three renderings, as reviewed in
    ``tests/golden`` (the numbers checked by hand: the tests above derive the key ones)."""
    golden("report_seeds.md", report.text)
    golden("report_seeds.txt", report.terminal())
    page = report.html()
    images = EMBEDDED_PNG.findall(page)
    assert len(images) == 4  # the loss beside the hidden class, and the three sweep figures
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    golden("report_seeds.html", EMBEDDED_PNG.sub("data:image/png;base64,...", page))


def test_the_summary_holds_every_column_of_every_run(report, golden):
    shown = report.summary.drop(columns="run_id")
    golden("report_seeds_summary.csv", shown.to_csv(index=False))


def test_a_one_seed_report_reads_as_reviewed(one_seed_runs, golden):
    report = build_report(*one_seed_runs)
    golden("report_one_seed.md", report.text)
    plt.close("all")


def test_every_run_is_listed_with_its_seed_and_status(report):
    assert "7 runs: 6 finished, 1 did not (listed below)." in report.text
    assert "| class_weights=none,trainer.seed=2 | FINISHED | 2 | 2 | 0.0190 |" in report.text
    assert "| broken | FAILED |" in report.text


def test_configurations_show_mean_and_interval_over_their_seeds(report):
    # rare IoU of none: 0.00, 0.01, 0.02 -> 0.010 ± t(0.975, 2) 0.01 / sqrt(3) = 0.025
    assert "## Configurations over seeds" in report.text
    assert "| class_weights=none | 3 |" in report.text
    assert "0.010 ± 0.025" in report.text
    assert "0.600 ± 0.248" in report.text  # median_frequency: 0.5, 0.6, 0.7


def test_ranking_excludes_the_failed_run_and_shows_intervals(report):
    table = report.rankings.table.set_index("configuration")
    assert list(table.index) == ["class_weights=none", "class_weights=median_frequency"]
    assert table.loc["class_weights=none", "val_loss"] == pytest.approx(0.02)
    assert table.loc["class_weights=none", "val_loss_ci"] == pytest.approx(
        4.3027 * 0.001 / math.sqrt(3), rel=1e-4
    )
    assert "| class_weights=none | ce | 3 | 0.0200 ± 0.0025 |" in report.text


def test_the_separated_statement_and_the_image_evidence(report):
    (found,) = report.rankings.mismatches
    assert found.separated
    assert "**Lowest loss is not best worst class.** Among all configurations" in report.text
    # 3 paired seeds: rare IoU gains 0.50, 0.59, 0.68
    assert f"worst-class IoU +{0.59:.3f} (95 % CI [" in report.text
    # Per-image counts are identical image by image: the bootstrap interval is a point.
    assert "Paired bootstrap over the validation images" in report.text
    assert "| rare | 0.000 | 0.500 | 0.500 | 0.500 | 0.500 | 20 |" in report.text


def test_markdown_formats_floats_and_leaves_nan_blank():
    frame = pd.DataFrame({"a": ["x", "y"], "b": [0.123456, float("nan")], "c": [1, 2]})
    assert markdown(frame) == "| a | b | c |\n|---|---|---|\n| x | 0.1235 | 1 |\n| y |  | 2 |"
    assert markdown(frame, "{:.1f}").splitlines()[2] == "| x | 0.1 | 1 |"
    tiny = pd.DataFrame({"val_loss": [5.2e-4, 3.1e-5, 0.0]})
    # one format per column: enough decimals for two digits of its smallest nonzero value
    assert markdown(tiny).splitlines()[2:] == ["| 0.000520 |", "| 0.000031 |", "| 0.000000 |"]
    mixed = pd.DataFrame({"iou": [0.000284, 0.00029, 0.05]})
    assert markdown(mixed, "{:.3f}").splitlines()[2:] == [
        "| 0.00028 |",
        "| 0.00029 |",
        "| 0.05000 |",
    ]


def test_cli_writes_the_report_for_an_experiment(store, tmp_path, capsys):
    store_path, _, _ = store
    uri = f"sqlite:///{store_path / 'mlflow.db'}"
    assert main(["hand", f"tracking_uri={uri}", f"out={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "7 runs: 6 finished, 1 did not" in out and f"written to {tmp_path}" in out
    for name in ("report.md", "history.csv", "history.parquet", "summary.csv"):
        assert (tmp_path / name).is_file(), name
    summary = pd.read_csv(tmp_path / "summary.csv")
    finished = summary[summary.status == "FINISHED"]
    assert finished.groupby("configuration").seed.apply(sorted).to_dict() == {
        "class_weights=median_frequency": [0, 1, 2],
        "class_weights=none": [0, 1, 2],
    }
    assert main(["nope", f"tracking_uri={uri}"]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err


def test_summary_reads_each_column_from_its_own_metric(report):
    runs = report.summary.set_index("run_name")
    row = runs.loc["class_weights=median_frequency,trainer.seed=1"]
    assert (row.configuration, row.seed, row.epochs) == ("class_weights=median_frequency", 1, 2)
    assert row.val_loss == pytest.approx(0.032) and row.val_ce == pytest.approx(0.048)
    assert row.best_val_loss == pytest.approx(0.032)  # epoch 1 logged 3x the final loss
    assert (row.miou, row.min_iou) == (pytest.approx(0.775), pytest.approx(0.6))
    assert (row.pixel_acc, row.class_acc) == (pytest.approx(0.984), pytest.approx(0.96))
    assert (row.worst_class, row.hidden_classes) == ("rare", "")
    assert runs.loc["class_weights=none,trainer.seed=0"].hidden_classes == "rare"


@pytest.mark.slow
def test_the_html_report_renders_in_a_real_browser(store, tmp_path):
    """The page as a reader opens it: the verdict first, the loss beside the hidden class
    right under it, every figure captioned, run names linking to their MLflow pages, wide
    tables scrolling inside the page rather than cut off."""
    from PIL import Image

    from seglab.analysis.links import UiLinks

    _, client, runs = store
    report = build_report(client, runs, UiLinks("http://ui:1"))
    page = tmp_path / "report.html"
    page.write_text(report.html())
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # not a blank page
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert "Lowest loss is not best worst class." in dom
    body = dom.split("<h1>seglab sweep report</h1>", 1)[1]
    assert body.startswith("\n<p><strong>The lowest val loss hides a failing class</strong>")
    assert body.index("<figure>") < body.index("<h2>Runs</h2>")  # the key figure comes first
    assert dom.count("<figure>") == dom.count("<figcaption>") == 4
    assert dom.count('src="data:image/png;base64,') == 4  # the figures, embedded
    for run in runs[:-1]:
        info = run.info
        page_url = f"http://ui:1/#/experiments/{info.experiment_id}/runs/{info.run_id}?"
        assert f'<td><a href="{page_url}workflowType=machine_learning">{info.run_name}</a>' in dom
    for cls in CLASSES:
        assert f"<td>{cls}</td>" in dom
    assert dom.count('<div class="table">') == dom.count("<table")


def test_the_verdict_opens_the_report_within_one_loss_function(report):
    assert report.verdict[0] == (
        "**The lowest val loss hides a failing class**: a lower loss did not mean a better "
        "worst class."
    )
    # none seed 2 has the lowest loss (0.019) and rare at 0.02; median_frequency seed 2 0.70
    assert report.verdict[1] == (
        "**loss=ce: the lowest val loss hides rare.** class_weights=none,trainer.seed=2 has the "
        "lowest val/loss (0.0190) and rare IoU 0.020; "
        "class_weights=median_frequency,trainer.seed=2 reaches 0.700 at val/loss 0.0290."
    )
    assert report.blocks[1:3] == report.verdict  # first, under the title


def test_make_ui_prints_each_experiments_page_and_its_latest_sweeps_verdict(tmp_path):
    from seglab.analysis.links import UiLinks
    from seglab.analysis.overview import overview

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("empty", (tmp_path / "artifacts").as_uri())
    experiment = client.create_experiment("hand", (tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="sweep 1", tags={"seglab.sweep": "parent"})
    parent_id = parent.info.run_id
    for scheme, (loss, rare) in (("none", (0.02, 0.0)), ("median_frequency", (0.03, 0.6))):
        run = write_run(client, experiment, tmp_path, scheme, 0, loss, rare)
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)
    lines = overview(client, UiLinks("http://ui:1"))
    assert not any(line.startswith("empty:") for line in lines)  # no runs: not listed
    assert lines[:3] == [
        f"hand: http://ui:1/#/experiments/{experiment}/runs?workflowType=machine_learning",
        f"  latest sweep, sweep 1: http://ui:1/#/experiments/{experiment}/runs/{parent_id}"
        "?workflowType=machine_learning",
        "  The lowest val loss hides a failing class: a lower loss did not mean a better worst "
        "class.",
    ]
    assert lines[3].startswith(
        "  loss=ce: the lowest val loss hides rare. class_weights=none,trainer.seed=0 has the "
        "lowest val/loss (0.0200) and rare IoU 0.000; class_weights=median_frequency,"
        "trainer.seed=0 reaches 0.600 at val/loss 0.0300. Chart val/loss beside val/iou/rare: "
        "http://ui:1/#/metric/?runs="
    )
    assert len(lines) == 4


@pytest.mark.slow
def test_the_printed_link_charts_the_loss_beside_the_hidden_class_in_the_mlflow_ui(store, tmp_path):
    """The MLflow UI itself, served by ``mlflow server``, in a real browser: the verdict's link
    opens on val/loss and val/iou/rare of both runs against the epoch, and a run's page is
    filed under the experiment's runs, not under "Evaluations"."""
    from PIL import Image

    from seglab.analysis.links import UiLinks

    store_path, client, runs = store
    with mlflow_serving(f"sqlite:///{store_path / 'mlflow.db'}", tmp_path) as address:
        report = build_report(client, runs, UiLinks(address))
        (link,) = re.findall(r"\]\((http[^)]+)\)", report.verdict[1])
        assert link.startswith(f"{address}/#/metric/?") and "x_axis=step" in link
        dom = chromium(tmp_path, "--dump-dom", link, wait_ms=20000)
        assert "val/loss vs val/iou/rare" in dom  # the chart's title: both metrics on one chart
        for name in (
            "class_weights=none,trainer.seed=2",
            "class_weights=median_frequency,trainer.seed=2",
        ):
            assert f"{name} (val/loss)" in dom and f"{name} (val/iou/rare)" in dom  # legend
        shot = tmp_path / "chart.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900", link, wait_ms=20000)
        pixels = np.asarray(Image.open(shot).convert("L"))
        assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # not a blank page
        run = runs[0].info
        page = chromium(
            tmp_path,
            "--dump-dom",
            UiLinks(address).run(run.experiment_id, run.run_id),
            wait_ms=20000,
        )
        assert run.run_name in page
        assert re.search(r'data-testid="experiment-observatory-link-runs"[^>]*>Runs<', page)


@pytest.mark.slow
def test_a_click_on_a_header_sorts_its_table_in_the_browser(report, tmp_path):
    import re

    page = tmp_path / "sorted.html"
    # Click the runs table's val_loss header once (ascending) when the page has loaded.
    click = (
        "<script>const th = [...document.querySelectorAll('table.sortable')[0]"
        ".querySelectorAll('th')].find((h) => h.textContent === 'val_loss'); th.click();"
        "</script></body>"
    )
    page.write_text(report.html().replace("</body>", click))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    first_table = dom.split("</table>")[0]
    rows = re.findall(
        r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>",
        first_table,
    )
    losses = [float(loss) for _, _, loss in rows]
    assert losses == sorted(losses) and len(losses) == 7
    assert rows[0][0] == "broken"  # the failed run's 0.001 comes first


def test_the_latest_sweep_is_the_default_target(tmp_path, monkeypatch, capsys):
    import seglab.report as report_module
    from seglab.analysis.runs import latest_sweep

    monkeypatch.setattr(report_module, "project_root", lambda: tmp_path)
    monkeypatch.setattr("seglab.tracking.store.project_root", lambda: tmp_path)
    assert main([]) == 2
    assert capsys.readouterr().err == (
        f"seglab report: no sweep in {tmp_path}/outputs/sweeps: run one first (make demo, or "
        "seglab train -m ...), or name one (SEGLAB_SWEEP=<sweep dir> for the notebook, "
        "target=<sweep dir|run id|name> for seglab report)\n"
    )
    for stamp in ("2026-11-24_09-00-00", "2026-11-24_10-00-00", "2026-11-23_23-00-00"):
        (tmp_path / "outputs" / "sweeps" / stamp).mkdir(parents=True)
        (tmp_path / "outputs" / "sweeps" / stamp / "sweep.json").write_text("{}")
    (tmp_path / "outputs" / "sweeps" / "2026-11-25_00-00-00").mkdir()  # no sweep.json: not one
    sweeps = tmp_path / "outputs" / "sweeps"
    assert latest_sweep(sweeps) == sweeps / "2026-11-24_10-00-00"


def test_each_target_has_its_default_report_folder(store, tmp_path, monkeypatch):
    import seglab.report as report_module

    _, client, runs = store
    monkeypatch.setattr(report_module, "project_root", lambda: tmp_path)
    monkeypatch.setattr("seglab.tracking.store.project_root", lambda: tmp_path)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    parent = runs[0].info.run_id  # any run id: it has no children here
    (sweep / "sweep.json").write_text(json.dumps({"parent_run_id": parent}))
    info = {"parent_run_id": parent}
    assert report_module.resolve(str(sweep), client) == ([], sweep / "report", info)
    assert report_module.resolve(parent, client) == ([], tmp_path / "outputs/reports" / parent, {})
    found, folder, _ = report_module.resolve("hand", client)
    assert len(found) == 7 and folder == tmp_path / "outputs/reports/hand"


def test_written_tables_have_no_index_column(report, tmp_path):
    report.write(tmp_path)
    for table in ("history.csv", "summary.csv"):
        assert pd.read_csv(tmp_path / table).columns[0] == "run_id", table
    assert pd.read_parquet(tmp_path / "history.parquet").index.equals(
        pd.RangeIndex(len(report.history))
    )
    assert list(pd.read_parquet(tmp_path / "history.parquet").columns) == list(
        report.history.columns
    )


def test_the_terminal_text_underlines_headings_and_drops_markdown_bold():
    from seglab.analysis.report import Report

    text = Report(
        pd.DataFrame(), pd.DataFrame(), None, {}, ["# Title", "## Part", "a **bold** word"]
    )
    assert text.terminal() == "Title\n=====\n\nPart\n----\n\na bold word\n"


def test_cli_help_names_the_command_and_every_option_with_its_default(capsys):
    from seglab.report import HELP

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("seglab report [target=]<sweep dir | parent run id | experiment name>")
    assert HELP.strip() in text
    for option in ("target: null", "out: null", "tracking_uri: null", "markdown: false"):
        assert f"\n  {option}" in text, option
    assert main(["--out", "x"]) == 2
    assert capsys.readouterr().err == "seglab report: --out is written out=<folder> now\n"


def test_cli_prints_aligned_text_by_default_and_markdown_when_asked(store, tmp_path, capsys):
    store_path, _, _ = store
    uri = f"sqlite:///{store_path / 'mlflow.db'}"
    plt.close("all")
    assert main(["hand", f"tracking_uri={uri}", f"out={tmp_path / 'a'}"]) == 0
    aligned = capsys.readouterr().out
    assert "Configurations over seeds\n-------------------------" in aligned
    assert "| class_weights=none | 3 |" not in aligned
    assert main(["hand", f"tracking_uri={uri}", f"out={tmp_path / 'b'}", "markdown=true"]) == 0
    marked = capsys.readouterr().out
    assert "## Configurations over seeds" in marked and "| class_weights=none | 3 |" in marked
    assert plt.get_fignums() == []  # the report's figures are closed once written


def test_cli_defaults_to_the_projects_store_and_report_folder(store, tmp_path, monkeypatch, capsys):
    import seglab.report as report_module

    store_path, _, _ = store
    monkeypatch.setattr(report_module, "project_root", lambda: tmp_path)
    monkeypatch.setattr("seglab.tracking.store.project_root", lambda: tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "outputs").mkdir()
    shutil.copy(store_path / "mlflow.db", tmp_path / "outputs" / "mlflow.db")
    assert main(["hand"]) == 0
    assert f"written to {tmp_path / 'outputs/reports/hand'}" in capsys.readouterr().out
    assert (tmp_path / "outputs/reports/hand/report.html").is_file()


def test_cli_reads_the_store_from_the_sweep_unless_one_is_given(store, tmp_path, capsys):
    store_path, _, runs = store
    uri = f"sqlite:///{store_path / 'mlflow.db'}"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    parent = runs[0].info.run_id  # no children: nothing to report
    (sweep / "sweep.json").write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri}))
    assert main([str(sweep)]) == 2
    assert capsys.readouterr().err == (
        f"seglab report: no runs found for {str(sweep)!r} at {uri}: give a sweep directory, a "
        "sweep's parent run id or an experiment name\n"
    )
    shutil.copy(store_path / "mlflow.db", tmp_path / "other.db")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main([str(sweep), f"tracking_uri={other}"]) == 2
    assert f" at {other}: give a sweep directory" in capsys.readouterr().err


def test_cli_refuses_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"seglab report: {tmp_path} is not a seglab sweep directory (no sweep.json)\n"
    )


@pytest.fixture
def one_seed_runs(tmp_path):
    """Three configurations, one seed each: lower loss, better worst class (no mismatch); no
    run logged val/miou."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("one", (tmp_path / "artifacts").as_uri())
    runs = []
    for scheme, loss, rare in (("none", 0.1, 0.5), ("enet", 0.2, 0.3), ("mf", 0.3, 0.1)):
        run = client.create_run(
            experiment,
            run_name=f"class_weights={scheme}",
            tags={
                "seglab.loss": "ce",
                "seglab.class_weights": scheme,
                "seglab.class_names": json.dumps(CLASSES),
            },
        )
        client.log_param(run.info.run_id, "class_weights.scheme", scheme)
        client.log_param(run.info.run_id, "trainer.seed", "0")
        final = {"val/loss": loss, "val/min_iou": rare, "val/iou/bg": 0.95, "val/iou/rare": rare}
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 1) for k, v in final.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        runs.append(client.get_run(run.info.run_id))
    return client, runs


def test_a_one_seed_sweep_shows_each_runs_final_iou_and_the_rank_correlation(
    one_seed_runs, tmp_path
):
    report = build_report(*one_seed_runs)
    text = report.text
    assert "## Configurations over seeds" not in text  # one seed: no intervals to show
    table = text.split("## Final validation IoU per class\n\n")[1].split("\n\n")[0]
    assert table.splitlines() == [
        "| run_name | bg | rare |",
        "|---|---|---|",
        "| class_weights=enet | 0.950 | 0.300 |",
        "| class_weights=mf | 0.950 | 0.100 |",
        "| class_weights=none | 0.950 | 0.500 |",
    ]
    ranked = report.rankings.table
    assert list(ranked.rank_by_min_iou) == [1, 2, 3]  # in loss order: none, enet, mf
    assert ranked.rank_by_miou.isna().all()  # never logged: no rank, a blank cell
    assert (
        "Spearman correlation of val loss with worst-class IoU across configurations: -1.00 "
        "(a loss that tracked the failing class would be near -1)."
    ) in text
    assert report.rankings.mismatches == []
    report.write(tmp_path / "out")
    for figure in ("final_iou_heatmap", "val_loss_vs_min_iou", "class_iou_curves"):
        assert (tmp_path / "out" / f"{figure}.png").stat().st_size > 0, figure
    plt.close("all")


def test_ranked_cells_blank_a_metric_never_logged_and_unhide_tiny_losses():
    table = pd.DataFrame(
        {"val_loss": [3.1e-5, 0.2], "val_loss_ci": [float("nan"), 0.01], "miou": [float("nan")] * 2}
    ).assign(miou_ci=float("nan"))
    shown = with_intervals(table, {"val_loss": 4, "miou": 3})
    assert shown.to_dict("list") == {"val_loss": ["3.1e-05", "0.2000 ± 0.0100"], "miou": ["", ""]}


def test_seed_tables_split_whole_split_metrics_from_classes_in_class_index_order():
    rows = []
    for configuration, n in (("b", 3), ("a", 1)):  # first-seen order, not alphabetical
        for metric, mean in (
            ("val_loss", 0.25),
            ("val/iou/sky", 0.9),
            ("miou", 0.5),
            ("val/iou/car", 0.4),
            ("val/iou/pole", 0.1),
            ("val_ce", NAN),  # never logged
        ):
            low, high = (mean - 0.05, mean + 0.05) if n > 1 else (NAN, NAN)
            rows.append((configuration, metric, n, mean, 0.04, low, high))
    frame = pd.DataFrame(
        rows, columns=["configuration", "metric", "n", "mean", "sd", "ci_low", "ci_high"]
    )
    scalar, per_class = seed_tables(frame, ["sky", "pole", "car"])
    assert scalar.to_dict("list") == {
        "configuration": ["b", "a"],
        "seeds": [3, 1],
        "val_loss": ["0.250 ± 0.050", "0.250"],
        "miou": ["0.500 ± 0.050", "0.500"],
        "val_ce": ["", ""],
    }
    assert per_class.to_dict("list") == {
        "configuration": ["b", "a"],
        "sky": ["0.900 ± 0.050", "0.900"],
        "pole": ["0.100 ± 0.050", "0.100"],
        "car": ["0.400 ± 0.050", "0.400"],
    }
    # classes the order does not know come last, alphabetically
    assert list(seed_tables(frame, ["car"])[1].columns) == ["configuration", "car", "pole", "sky"]


def test_image_evidence_compares_the_two_runs_of_the_lowest_seed_both_ran(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("seeds", (tmp_path / "artifacts").as_uri())
    # none ran seeds 1, 2; median_frequency ran 0, 1 (rare found 0.2, 0.6): only seed 1 is shared
    spec = [("none", 1, 0.020, 0.0), ("none", 2, 0.021, 0.0)]
    spec += [("median_frequency", 0, 0.030, 0.2), ("median_frequency", 1, 0.031, 0.6)]
    runs = [write_run(client, experiment, tmp_path, *run) for run in spec]
    report = build_report(client, runs)
    text = report.text
    assert (
        "Paired bootstrap over the validation images (2000 resamples): iou_a is "
        "class_weights=none,trainer.seed=1, iou_b is class_weights=median_frequency,"
        "trainer.seed=1, difference is iou_b - iou_a"
    ) in text
    assert "| rare | 0.000 | 0.600 | 0.600 | 0.600 | 0.600 | 20 |" in text
    plt.close("all")


def test_cli_names_a_store_it_cannot_read_or_an_out_it_cannot_write_and_creates_nothing(
    store, tmp_path, capsys
):
    store_path, _, _ = store
    uri = f"sqlite:///{store_path / 'mlflow.db'}"
    missing = tmp_path / "nowhere" / "mlflow.db"
    cases = [
        (
            [f"tracking_uri=sqlite:///{missing}", "hand"],
            f"tracking_uri='sqlite:///{missing}': no MLflow store at {missing}",
        ),
        (
            ["tracking_uri=nonsense://x", "hand"],
            "tracking_uri='nonsense://x' is not an MLflow tracking URI: scheme 'nonsense'",
        ),
        (
            [f"tracking_uri={uri}", "out=/proc/seglab-report", "hand"],
            "out='/proc/seglab-report': cannot write to /proc/seglab-report",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith(f"seglab report: {message}")
    assert not missing.parent.exists()


HOSTILE = "<img src=x onerror=alert(1)>|[x](javascript:alert(2))"


@pytest.fixture
def unlucky(tmp_path):
    """Runs as unlucky sweeps leave them: two children of one name (one with a hostile name
    too), a run that failed before its first epoch, and one that failed later."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("unlucky", (tmp_path / "artifacts").as_uri())
    finished = [
        write_run(client, experiment, tmp_path, "none", seed, 0.02, rare)
        for seed, rare in ((0, 0.0), (1, 0.4))
    ]
    for run in finished:  # both named exp1
        client.set_tag(run.info.run_id, "mlflow.runName", "exp1")
    early = client.create_run(experiment, run_name=HOSTILE)
    client.set_tag(early.info.run_id, "seglab.failure_reason", "ValueError: mask m.png has ...")
    client.set_terminated(early.info.run_id, "FAILED")
    later = client.create_run(experiment, run_name="late")
    client.log_metric(later.info.run_id, "val/loss", 0.5, step=1)
    client.set_tag(later.info.run_id, "seglab.failure_reason", "FloatingPointError: nan")
    client.set_terminated(later.info.run_id, "FAILED")
    runs = [client.get_run(r.info.run_id) for r in (*finished, early, later)]
    return client, runs


def test_runs_of_one_name_and_runs_that_failed_before_epoch_one_are_all_reported(unlucky):
    client, runs = unlucky
    report = build_report(client, runs)
    a, b = (f"exp1 ({run.info.run_id[:8]})" for run in runs[:2])
    assert {a, b} <= set(report.summary.run_name)  # told apart by their ids
    from seglab.analysis.runs import final_iou_matrix

    assert {a, b} <= set(final_iou_matrix(report.history, runs).index)  # the heatmap's rows
    assert "4 runs: 2 finished, 2 did not (listed below)." in report.text
    assert "| late | FAILED | 1 | FloatingPointError: nan |" in report.text
    assert "| FAILED | 0 | ValueError: mask m.png has ... |" in report.text
    assert list(report.figures) == [
        "ce_loss_beside_rare",  # seed 0 hides rare at the same loss as seed 1, which finds it
        "final_iou_heatmap",
        "val_loss_vs_min_iou",
        "class_iou_curves",
    ]
    plt.close("all")


def test_no_run_finished_is_said_with_every_reason(unlucky):
    client, runs = unlucky
    report = build_report(client, runs[2:])
    assert report.rankings is None and report.figures == {}
    assert "2 runs: 0 finished, 2 did not (listed below)." in report.text
    assert "No run finished. Each ended with the status and the reason" in report.text
    from seglab.analysis.runs import finished_runs

    with pytest.raises(ValueError) as refused:
        finished_runs(report.summary)
    assert str(refused.value) == (
        f"no run finished: {HOSTILE} FAILED (ValueError: mask m.png has ...); late FAILED "
        "(FloatingPointError: nan)"
    )


def test_names_from_the_store_are_text_in_every_rendering(unlucky):
    client, runs = unlucky
    report = build_report(client, runs)
    escaped = r"&lt;img src=x onerror=alert(1)&gt;\|\[x\](javascript:alert(2))"
    assert escaped in report.text and "<img" not in report.text
    page = report.html()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;|[x]" in page
    assert HOSTILE in report.terminal()
    plt.close("all")


def test_seglab_compare_shows_two_runs_class_by_class_with_the_verdict(store, capsys):
    from seglab.compare import main as compare_main

    store_path, _, runs = store
    uri = f"sqlite:///{store_path / 'mlflow.db'}"
    by_name = {run.info.run_name: run.info for run in runs}
    a = by_name["class_weights=none,trainer.seed=0"]
    b = by_name["class_weights=median_frequency,trainer.seed=0"]
    assert compare_main([a.run_id, b.run_id, f"tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"a: class_weights=none,trainer.seed=0 ({a.run_id})  loss=ce  val/loss 0.0200  "
        "val/ce 0.0300  val/min_iou 0.000 (rare)"
    )
    assert out[1].endswith(f"/#/experiments/{a.experiment_id}/runs/{a.run_id}?{TRAINING}")
    assert out[2].startswith(f"b: class_weights=median_frequency,trainer.seed=0 ({b.run_id})")
    # 20 alike images, 10 rare pixels each: none finds 0 of them, median_frequency 5, so rare
    # goes 0 -> 0.5 and bg 90/100 -> 90/95 in every resample: the intervals are points
    assert out[6:9] == [
        "class  iou_a  iou_b  difference  ci_low  ci_high  images",
        "   bg  0.900  0.947       0.047   0.047    0.047      20",
        " rare  0.000  0.500       0.500   0.500    0.500      20",
    ]
    assert out[10] == (
        "Verdict: b is better on bg (+0.047, +0.047 to +0.047), rare (+0.500, +0.500 to +0.500); "
        "a is better on no class. The intervals say whether a difference holds across these "
        "images for these two trained models, not across seeds."
    )


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["abc", "0" * 32], "seglab compare: a='abc' is not a run id (32 hex digits"),
        (["0" * 32, "1" * 32], "seglab compare: a='" + "0" * 32 + "': no such run in sqlite"),
        (["0" * 32], "seglab compare: give two runs: seglab compare <run id> <run id>"),
        (["a", "b", "c"], "seglab compare: give two runs, got ['a', 'b', 'c']"),
    ],
)
def test_seglab_compare_refuses_in_one_line(store, capsys, words, message):
    from seglab.compare import main as compare_main

    store_path, _, _ = store
    assert compare_main([*words, f"tracking_uri=sqlite:///{store_path / 'mlflow.db'}"]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_seglab_compare_names_a_split_a_run_was_not_scored_on(store, capsys):
    from seglab.compare import main as compare_main

    store_path, _, runs = store
    a, b = (run.info.run_id for run in runs[:2])
    uri = f"tracking_uri=sqlite:///{store_path / 'mlflow.db'}"
    assert compare_main([a, b, "split=test", uri]) == 2
    assert f"run {a} has no per_image/test.parquet" in capsys.readouterr().err
    assert compare_main([a, b, "split=train", uri]) == 2
    assert "split='train': use val or test" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fraction", "shown"),
    [
        (0.998494, "99.85%"),
        (1.0, "100.00%"),
        (0.0, "0.00%"),
        (0.00074, "0.07%"),
        (0.0000074, "0.00074%"),  # a share the fixed decimals would show as 0
    ],
)
def test_every_accuracy_and_share_is_a_percentage_with_two_decimals(fraction, shown):
    from seglab.core.formatting import percent

    assert percent(fraction) == shown


def test_runs_of_two_dataset_folders_are_ranked_and_told_each_group_apart(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("pooled", (tmp_path / "artifacts").as_uri())
    runs = []
    for root, losses in (("/a", (0.02, 0.03)), ("/b", (0.5, 0.4))):
        for scheme, loss, rare in (("none", losses[0], 0.0), ("median_frequency", losses[1], 0.6)):
            run = write_run(client, experiment, tmp_path, scheme, 0, loss, rare)
            client.log_param(run.info.run_id, "data.root", root)
            runs.append(client.get_run(run.info.run_id))
    report = build_report(client, runs)
    headings = [b for b in report.blocks if isinstance(b, str) and b.startswith("## Ranked")]
    assert headings == [
        "## Ranked by val loss within each loss, beside worst-class IoU and mIoU: data.root=/a",
        "## Ranked by val loss within each loss, beside worst-class IoU and mIoU: data.root=/b",
    ]
    # /a: the lowest loss (none) hides rare; /b: the lowest loss is median_frequency's
    assert report.verdict[0].startswith(
        "**The lowest val loss hides a failing class in 1 of 2 loss functions** (ce, data.root=/a)"
    )
    assert report.verdict[2].startswith(  # (its name is shared: told apart by its id)
        "loss=ce, data.root=/b: the lowest val loss hides no class: "
        "class_weights=median_frequency,trainer.seed=0 ("
    )
    assert report.verdict[2].endswith("(val/loss 0.4000), whose worst class is rare at IoU 0.600.")
    assert "| run_name | group | status |" in report.text
    plt.close("all")


def test_the_report_shows_where_each_class_outline_is_an_infinite_distance_as_inf(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("outline", (tmp_path / "artifacts").as_uri())
    runs = []
    for scheme, loss, rare, outline, distance in (
        ("none", 0.02, 0.0, 0.0, float("inf")),  # rare never predicted in some image
        ("median_frequency", 0.03, 0.6, 0.41, 3.25),
    ):
        run = write_run(client, experiment, tmp_path, scheme, 0, loss, rare)
        metrics = {
            "val/boundary_iou/bg": 0.9,
            "val/boundary_iou/rare": outline,
            "val/hd95/bg": 1.0,
            "val/hd95/rare": distance,
        }
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 2) for k, v in metrics.items()])
        runs.append(client.get_run(run.info.run_id))
    assert runs[0].data.metrics["val/hd95/rare"] > 1e308  # MLflow's largest float
    report = build_report(client, runs)
    text = report.text
    assert "## Where the outline is: boundary IoU and HD95" in text
    assert "| class_weights=none,trainer.seed=0 | 0.900 | 0.000 |" in text
    assert "| class_weights=none,trainer.seed=0 | 1.00 | inf |" in text  # read back as inf
    assert "| class_weights=median_frequency,trainer.seed=0 | 1.00 | 3.25 |" in text
    plt.close("all")
