"""Rankings and mismatch sentences on hand-made run summaries; labels and class order from a
real MLflow store."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from seglab.analysis.rankings import rankings, spearman
from seglab.analysis.runs import class_order, configuration_labels, final_iou_matrix
from seglab.schema import AXES, split_key


def summary(rows):
    columns = ["run_id", "run_name", "status", "loss", "val_loss", "min_iou", "miou", "worst_class"]
    return pd.DataFrame(rows, columns=columns)


RUNS = summary(
    [
        ("a", "ce,none", "FINISHED", "ce", 0.02, 0.00, 0.79, "speck"),
        ("b", "ce,median", "FINISHED", "ce", 0.03, 0.48, 0.83, "speck"),
        ("c", "dice,none", "FINISHED", "dice", 0.01, 0.92, 0.98, "speck"),
        ("d", "dice,median", "FINISHED", "dice", 0.70, 0.06, 0.58, "disk"),
        ("e", "failed", "FAILED", "ce", 0.001, 0.99, 0.99, "speck"),
    ]
)


def test_rankings_of_no_finished_run_refuse_with_the_reason():
    with pytest.raises(ValueError, match=r"^no finished runs to rank$"):
        rankings(RUNS[RUNS.status != "FINISHED"])


def test_rankings_ignore_unfinished_runs_and_rank_three_ways():
    ranked = rankings(RUNS)
    # Sorted by loss function, then loss; ranked by loss within each loss function only.
    assert list(ranked.table.configuration) == ["ce,none", "ce,median", "dice,none", "dice,median"]
    assert list(ranked.table.rank_by_loss) == [1, 2, 1, 2]
    assert list(ranked.table.rank_by_min_iou) == [4, 2, 1, 3]
    assert list(ranked.table.rank_by_miou) == [3, 2, 1, 4]
    assert ranked.best_by_loss == ranked.best_by_min_iou == "dice,none"
    assert list(ranked.table.seeds) == [1, 1, 1, 1]


def test_one_seed_cannot_separate_and_says_so_with_the_numbers():
    (found,) = rankings(RUNS).mismatches
    assert (found.group, found.lowest_loss, found.best_worst_class) == (
        "loss=ce",
        "ce,none",
        "ce,median",
    )
    assert not found.separated
    assert found.text.startswith("**Not separated: one seed.** Among loss=ce, the lowest val_loss")
    assert "(ce,none: 0.0200) has worst-class IoU 0.000 (speck)" in found.text
    assert "ce,median reaches 0.480 with val_loss 0.0300" in found.text


def test_global_mismatch_is_reported_first():
    ranked = rankings(RUNS[RUNS.loss == "ce"])
    assert ranked.mismatches[0].group == "all configurations"
    assert len(ranked.mismatches) == 1  # one loss only: no per-loss repeat


def seeded(values):
    """Runs of two configurations over seeds 0-2: {configuration: [(val_loss, min_iou)] * 3}."""
    rows = []
    for configuration, per_seed in values.items():
        for seed, (loss, min_iou) in enumerate(per_seed):
            rows.append(
                {
                    "run_id": f"{configuration}-{seed}",
                    "run_name": f"{configuration},trainer.seed={seed}",
                    "status": "FINISHED",
                    "configuration": configuration,
                    "seed": seed,
                    "loss": "ce",
                    "val_loss": loss,
                    "min_iou": min_iou,
                    "miou": 0.8,
                    "worst_class": "speck",
                }
            )
    return pd.DataFrame(rows)


def test_seeds_that_separate_the_two_make_the_statement():
    runs = seeded(
        {
            "weights=none": [(0.020, 0.00), (0.021, 0.01), (0.019, 0.00)],
            "weights=median": [(0.030, 0.45), (0.032, 0.50), (0.029, 0.48)],
        }
    )
    (found,) = rankings(runs).mismatches
    assert found.separated
    assert found.worst_class_gain.mean == pytest.approx((0.45 + 0.49 + 0.48) / 3)
    assert found.worst_class_gain.low > 0 and found.loss_gain.low > 0
    assert found.text.startswith(
        "**Lowest loss is not best worst class.** Among all configurations"
    )
    assert "weights=none: 0.0200 ± 0.0025" in found.text  # mean ± t(0.975, 2) * sd / sqrt(3)
    assert "Over 3 seeds" in found.text and "the seeds separate them" in found.text


def test_seed_noise_larger_than_the_difference_is_not_called_a_difference():
    runs = seeded(
        {
            "a": [(0.020, 0.10), (0.030, 0.60), (0.025, 0.20)],
            "b": [(0.028, 0.50), (0.022, 0.15), (0.031, 0.40)],
        }
    )
    (found,) = rankings(runs).mismatches
    assert (found.lowest_loss, found.best_worst_class) == ("a", "b")
    assert not found.separated and found.worst_class_gain.low < 0 < found.worst_class_gain.high
    assert found.text.startswith("**Not separated.** Among all configurations")
    assert "3 seeds cannot tell them apart" in found.text and "an interval includes 0" in found.text


def test_rankings_show_the_interval_of_each_configuration():
    runs = seeded({"a": [(0.1, 0.2), (0.2, 0.3), (0.3, 0.4)], "b": [(0.5, 0.5)] * 3})
    table = rankings(runs).table.set_index("configuration")
    assert table.loc["a", "val_loss"] == pytest.approx(0.2)
    assert table.loc["a", "val_loss_ci"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert table.loc["b", "min_iou_ci"] == 0.0 and table.loc["a", "seeds"] == 3


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e")

    def add(tags, params):
        run = client.create_run(experiment, tags=tags)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        return client.get_run(run.info.run_id)

    add.client = client
    return add


def test_configurations_are_the_runs_that_differ_only_in_seed(store):
    runs = [
        store(
            {"seglab.loss": loss},
            {
                "loss._target_": target,
                "trainer.seed": str(seed),
                "paths.output_dir": f"/tmp/{loss}{seed}",
                "data.rare_max_count": "2",
            },
        )
        for loss, target in (("ce", "CrossEntropy"), ("dice", "Dice"))
        for seed in (0, 1)
    ]
    labels = configuration_labels(runs)
    assert [labels[r.info.run_id] for r in runs] == ["loss=ce", "loss=ce", "loss=dice", "loss=dice"]
    other = store(
        {"seglab.loss": "ce"},
        {"loss._target_": "CrossEntropy", "trainer.seed": "0", "data.rare_max_count": "8"},
    )
    labels = configuration_labels([*runs, other])
    assert labels[other.info.run_id] == "loss=ce,data.rare_max_count=8"


def test_class_order_reads_the_tag_and_survives_names_from_a_classes_file(store):
    tagged = store(
        {"seglab.class_names": json.dumps(["sky", "road"])}, {"data.class_names": "None"}
    )
    legacy = store({}, {"data.class_names": "['bg', 'cell']"})
    from_file = store({}, {"data.class_names": "None"})
    assert class_order([tagged]) == ["sky", "road"]
    assert class_order([legacy]) == ["bg", "cell"]
    assert class_order([from_file]) == []


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3, 4], [1, 4, 9, 1000], 1.0),  # monotone, far from linear: Pearson 0.79
        ([1, 2, 3, 4], [2, 1, 4, 3], 0.6),  # d^2 sum 4: 1 - 6 * 4 / (4 * 15)
        ([1, 2, 2, 3], [1, 2, 3, 4], 0.9486833),  # ties take average ranks
        ([1, 2], [2, 1], float("nan")),
    ],
)
def test_spearman_on_ranks(x, y, expected):
    value = spearman(pd.Series(x, dtype=float), pd.Series(y, dtype=float))
    assert value == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("val/iou/speck", ("val/iou", "speck")),
        ("val/loss_share/bg", ("val/loss_share", "bg")),
        ("val/predicted_share/bar", ("val/predicted_share", "bar")),
        ("val/loss", ("val/loss", "")),
        ("val/miou", ("val/miou", "")),
    ],
)
def test_metric_keys_split_into_metric_and_class(key, expected):
    assert split_key(key) == expected


def test_ties_share_the_best_rank():
    runs = summary(
        [
            ("a", "a", "FINISHED", "ce", 0.02, 0.3, 0.8, "x"),
            ("b", "b", "FINISHED", "ce", 0.02, 0.3, 0.8, "x"),
            ("c", "c", "FINISHED", "ce", 0.03, 0.1, 0.7, "x"),
        ]
    )
    table = rankings(runs).table.set_index("configuration")
    assert list(table.rank_by_loss) == [1, 1, 3]
    assert list(table.rank_by_min_iou) == [1, 1, 3]
    assert rankings(runs).mismatches == []  # a tie on worst-class IoU is not a mismatch


def test_best_worst_class_is_chosen_by_worst_class_iou_not_miou():
    runs = summary(
        [
            ("a", "a", "FINISHED", "ce", 0.02, 0.0, 0.95, "x"),  # best mIoU, worst class 0
            ("b", "b", "FINISHED", "ce", 0.03, 0.4, 0.80, "x"),
        ]
    )
    ranked = rankings(runs)
    assert ranked.best_by_min_iou == "b" and ranked.best_by_loss == "a"
    (found,) = ranked.mismatches
    assert (found.lowest_loss, found.best_worst_class) == ("a", "b")


def test_lowest_loss_tied_on_worst_class_iou_with_the_best_is_no_mismatch():
    runs = summary(
        [
            ("a", "a", "FINISHED", "ce", 0.02, 0.4, 0.80, "x"),
            ("b", "b", "FINISHED", "ce", 0.03, 0.4, 0.90, "x"),
        ]
    )
    assert rankings(runs).mismatches == []


def test_sweep_file_is_required_for_a_sweep_dir(tmp_path):
    from seglab.analysis.runs import read_sweep_file

    with pytest.raises(ValueError, match="is not a seglab sweep directory"):
        read_sweep_file(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"parent_run_id": "x", "total_jobs": 2}))
    assert read_sweep_file(tmp_path) == {"parent_run_id": "x", "total_jobs": 2}


def test_child_runs_are_the_runs_nested_under_the_parent_oldest_first(store):
    from seglab.analysis.runs import child_runs

    parent = store({"seglab.sweep": "parent"}, {})
    first = store({"mlflow.parentRunId": parent.info.run_id}, {"trainer.seed": "0"})
    store({"mlflow.parentRunId": "someone-else"}, {})
    second = store({"mlflow.parentRunId": parent.info.run_id}, {"trainer.seed": "1"})
    children = child_runs(store.client, parent.info.run_id)
    assert [r.info.run_id for r in children] == [first.info.run_id, second.info.run_id]


def test_across_loss_functions_the_overall_sentence_compares_val_ce():
    runs = summary(
        [
            ("a", "focal", "FINISHED", "focal", 0.05, 0.02, 0.5, "pole"),  # lowest val_loss
            ("b", "ce", "FINISHED", "ce", 0.90, 0.06, 0.5, "pole"),
        ]
    ).assign(val_ce=[0.45, 0.40])  # on the common yardstick, ce is the lower one
    ranked = rankings(runs)
    assert ranked.mismatches == []  # ce has the lowest val_ce and the best worst class
    flipped = runs.assign(val_ce=[0.40, 0.45])
    (found,) = rankings(flipped).mismatches
    assert (found.lowest_loss, found.best_worst_class) == ("focal", "ce")
    assert "the lowest val_ce (focal: 0.4000)" in found.text


def test_experiment_runs_are_its_training_runs_oldest_first(store):
    from seglab.analysis.runs import experiment_runs

    first = store({"seglab.loss": "ce"}, {})
    store({"seglab.sweep": "parent"}, {})
    second = store({"seglab.loss": "dice"}, {})
    ids = [run.info.run_id for run in experiment_runs(store.client, "e")]
    assert ids == [first.info.run_id, second.info.run_id]
    with pytest.raises(ValueError, match="no MLflow experiment named 'f'"):
        experiment_runs(store.client, "f")


def test_a_worst_class_difference_the_loss_does_not_see_is_said_so():
    runs = seeded(
        {
            "weights=none": [(0.020, 0.00), (0.035, 0.00), (0.025, 0.00)],
            "weights=median": [(0.030, 0.50), (0.028, 0.60), (0.031, 0.55)],
        }
    )
    (found,) = rankings(runs).mismatches
    assert not found.separated
    assert found.worst_class_gain.low > 0 and found.loss_gain.low < 0 < found.loss_gain.high
    assert found.text.startswith("**The loss cannot tell them apart; the worst class can.**")
    assert "the val_loss interval includes 0, the worst-class one does not" in found.text


def test_every_per_class_key_a_run_logs_splits_into_metric_and_class():
    import numpy as np

    from seglab.core.records import EpochRecord
    from seglab.core.scores import scores_from_confusion
    from seglab.tracking.run_log import epoch_metrics

    cm = np.array([[8, 1], [2, 3]])
    record = EpochRecord(1, 0.5, 0.4, 0.3, np.array([0.6, 0.4]), cm, scores_from_confusion(cm), 1)
    for key in epoch_metrics(record, ["bg", "rare"]):
        metric, cls = split_key(key)
        assert (cls in ("bg", "rare")) == key.endswith(("/bg", "/rare")), key
        assert not metric.endswith(("/bg", "/rare")), key


def test_history_is_tidy_one_row_per_logged_point_with_the_runs_axes(store):
    from mlflow.entities import Metric

    from seglab.analysis.runs import final_values, history

    tagged = store({"seglab.loss": "dice", "seglab.class_weights": "enet"}, {})
    untagged = store({}, {})
    points = [("val/loss", 0.9, 1), ("val/loss", 0.5, 2), ("val/iou/sky", 0.25, 2)]
    for run in (tagged, untagged):
        store.client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, s) for k, v, s in points])
    runs = [store.client.get_run(r.info.run_id) for r in (tagged, untagged)]
    frame = history(store.client, runs)
    assert list(frame.columns) == [
        "run_id", "run_name", "status", "loss", "class_weights", "augment",
        "epoch", "metric", "class", "value",
    ]  # fmt: skip
    assert frame.index.equals(pd.RangeIndex(6))
    assert list(frame.sort_values("run_id").run_id) == list(frame.run_id)  # grouped by run
    rows = frame[frame.run_id == tagged.info.run_id]
    assert rows[["metric", "class", "epoch", "value"]].values.tolist() == [
        ["val/iou", "sky", 2, 0.25],
        ["val/loss", "", 1, 0.9],
        ["val/loss", "", 2, 0.5],
    ]
    axes = ["loss", "class_weights", "augment"]
    assert rows[axes].drop_duplicates().values.tolist() == [["dice", "enet", ""]]
    bare = frame[frame.run_id == untagged.info.run_id]
    assert bare[axes].drop_duplicates().values.tolist() == [["", "", ""]]  # tags missing
    last = final_values(frame)
    assert last.index.equals(pd.RangeIndex(4))  # two (metric, class) pairs per run
    assert sorted(last[last.metric == "val/loss"].value) == [0.5, 0.5]


def test_history_of_runs_without_metrics_is_empty_with_its_columns(store):
    from seglab.analysis.runs import history

    frame = history(store.client, [store({}, {})])
    assert frame.empty and list(frame.columns)[:3] == ["run_id", "run_name", "status"]
    assert len(frame.columns) == 10


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # (tags, params) per run -> labels
        (  # class weights logged per class tell the scheme apart: named by its tag
            [
                ({"seglab.class_weights": "none"}, {"class_weight/bg": "1.0"}),
                ({"seglab.class_weights": "enet"}, {"class_weight/bg": "2.5"}),
            ],
            ["class_weights=none", "class_weights=enet"],
        ),
        (  # an axis whose tag is missing is shown as unknown, not as the param
            [({}, {"loss._target_": "CE"}), ({"seglab.loss": "dice"}, {"loss._target_": "D"})],
            ["loss=?", "loss=dice"],
        ),
        (  # nothing tells them apart
            [({"seglab.loss": "ce"}, {"trainer.seed": "0"})] * 2,
            ["one configuration", "one configuration"],
        ),
    ],
)
def test_configuration_labels_name_what_differs(store, runs, expected):
    made = [store(tags, params) for tags, params in runs]
    labels = configuration_labels(made)
    assert [labels[run.info.run_id] for run in made] == expected


def test_compare_runs_bootstraps_the_two_runs_images_with_its_defaults(tmp_path):
    import numpy as np

    from seglab.analysis.runs import compare_runs
    from seglab.core.per_image import PerImageCounts
    from seglab.core.statistics import paired_bootstrap

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("p", (tmp_path / "artifacts").as_uri())
    names = ["bg", "rare"]
    rng = np.random.default_rng(0)
    counts, ids = {"val": [], "test": []}, []
    for _ in range(2):
        run = client.create_run(experiment, tags={"seglab.class_names": json.dumps(names)})
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        for split in counts:
            tp, fp, fn = (rng.integers(0, 20, (12, 2)) for _ in range(3))
            made = PerImageCounts(tuple(f"i{i}" for i in range(12)), tp, fp, fn)
            made.frame(names, split).to_parquet(folder / f"{split}.parquet")
            client.log_artifact(run.info.run_id, str(folder / f"{split}.parquet"), "per_image")
            counts[split].append(made)
        ids.append(run.info.run_id)
    expected = paired_bootstrap(*counts["val"], names, 2000, 0)
    pd.testing.assert_frame_equal(compare_runs(client, *ids), expected)
    other = paired_bootstrap(*counts["val"], names, 2001, 0)
    assert not other[["ci_low", "ci_high"]].equals(expected[["ci_low", "ci_high"]])
    # Another split, resample count and seed are passed on as given.
    expected = paired_bootstrap(*counts["test"], names, 500, 3)
    pd.testing.assert_frame_equal(compare_runs(client, *ids, "test", 500, 3), expected)


def test_configuration_summary_covers_summary_test_and_per_class_metrics_of_finished_runs():
    from seglab.analysis.runs import SUMMARY_METRICS, configuration_summary

    runs = pd.DataFrame(
        {
            "run_id": ["r0", "r1", "r2"],
            "status": ["FINISHED", "FINISHED", "FAILED"],
            "configuration": ["c", "c", "c"],
            **{metric: [0.5, 0.7, 0.0] for metric in SUMMARY_METRICS},
            "test_miou": [0.4, 0.6, 0.0],
            "test_class_acc": [float("nan")] * 3,  # no test split scored: left out
        }
    )
    frame = pd.DataFrame(
        {
            "run_id": ["r0", "r0", "r1", "r1", "r2"],
            "metric": ["val/iou", "val/iou", "val/iou", "val/iou", "val/iou"],
            "class": ["sky", "sky", "sky", "sky", "sky"],
            "epoch": [1, 2, 1, 2, 2],
            "value": [0.0, 0.2, 0.0, 0.4, 0.9],  # the failed run's 0.9 must not count
        }
    )
    table = configuration_summary(runs, frame).set_index("metric")
    assert list(table.index) == [*SUMMARY_METRICS, "test_miou", "val/iou/sky"]
    assert table.loc["val/iou/sky", "n"] == 2
    assert table.loc["val/iou/sky", "mean"] == pytest.approx(0.3)  # final epochs: 0.2, 0.4
    assert table.loc["test_miou", "mean"] == pytest.approx(0.5)
    assert (table["configuration"] == "c").all()


# Two seeds, the fewest that give an interval: {configuration: [(val_loss, min_iou)] per seed},
# and the whole sentence. Worst-class IoU gains 0.50, 0.52 -> 0.510 ± t(0.975, 1) 0.01 = 0.127
# (and 0.5, -0.3 -> 0.1 ± 12.706 * 0.4 = 5.082); loss gains +0.010, -0.005 -> +0.0025 ± 0.0953.
TWO_SEED_SENTENCES = {
    "the_worst_class_separates_but_not_the_loss": (
        {"a": [(0.020, 0.00), (0.030, 0.00)], "b": [(0.030, 0.50), (0.025, 0.52)]},
        "**The loss cannot tell them apart; the worst class can.** Among all configurations, "
        "the lowest val_loss (a: 0.0250 ± 0.0635) has worst-class IoU 0.000 ± 0.000 (speck), "
        "while b reaches 0.510 ± 0.127 with val_loss 0.0275 ± 0.0318. Over 2 seeds the "
        "differences are worst-class IoU +0.510 (95 % CI [+0.383, +0.637]), val_loss +0.0025 "
        "(95 % CI [-0.0928, +0.0978]): the val_loss interval includes 0, the worst-class one "
        "does not.",
    ),
    "neither_separates": (
        {"a": [(0.020, 0.00), (0.030, 0.40)], "b": [(0.030, 0.50), (0.025, 0.10)]},
        "**Not separated.** Among all configurations, the lowest val_loss (a: 0.0250 ± 0.0635) "
        "has worst-class IoU 0.200 ± 2.541 (speck), while b reaches 0.300 ± 2.541 with val_loss "
        "0.0275 ± 0.0318; 2 seeds cannot tell them apart: worst-class IoU +0.100 (95 % CI "
        "[-4.982, +5.182]), val_loss +0.0025 (95 % CI [-0.0928, +0.0978]), an interval "
        "includes 0.",
    ),
}


@pytest.mark.parametrize("case", sorted(TWO_SEED_SENTENCES))
def test_two_seeds_give_an_interval_and_the_sentence_says_what_it_shows(case):
    values, sentence = TWO_SEED_SENTENCES[case]
    (found,) = rankings(seeded(values)).mismatches
    assert found.text == sentence


def fake_run(tags=None, params=None):
    """What class_order reads of an MLflow run: its tags and params."""
    return SimpleNamespace(data=SimpleNamespace(tags=tags or {}, params=params or {}))


def test_class_order_is_the_union_of_the_runs_names_in_first_seen_order():
    runs = [
        fake_run(tags={"seglab.class_names": json.dumps(["sky", "road"])}),
        fake_run(params={"data.class_names": "['road', 'car']"}),
        fake_run(params={"data.class_names": "None"}),  # names from a classes file: nothing here
        fake_run(tags={"seglab.class_names": json.dumps(["pole", "sky"])}),
    ]
    assert class_order(runs) == ["sky", "road", "car", "pole"]


def test_final_iou_matrix_is_run_by_class_at_the_last_epoch_in_class_index_order():
    rows = [
        (run, epoch, name, value)
        for run, values in (("r1", (0.1, 0.2, 0.3)), ("r2", (0.4, 0.5, 0.6)))
        for epoch in (1, 2)
        for name, value in zip(("sky", "car", "bike"), values, strict=True)
    ]
    frame = pd.DataFrame(
        [
            (run, f"name-{run}", "val/iou", name, epoch, value * epoch)
            for run, epoch, name, value in rows
        ],
        columns=["run_id", "run_name", "metric", "class", "epoch", "value"],
    )
    matrix = final_iou_matrix(frame, [fake_run(tags={"seglab.class_names": '["sky", "car"]'})])
    # sky, car from the tag; bike, which no run names, after them
    assert list(matrix.columns) == ["sky", "car", "bike"]
    assert matrix.round(6).to_dict("index") == {
        "name-r1": {"sky": 0.2, "car": 0.4, "bike": 0.6},
        "name-r2": {"sky": 0.8, "car": 1.0, "bike": 1.2},
    }


def test_summary_row_per_run_reads_the_verdict_tags_seed_and_final_metrics():
    from seglab.analysis.runs import summary as run_summary

    def run(run_id, tags, seed):
        made = fake_run(tags, {"trainer.seed": seed, "loss._target_": "CrossEntropy"})
        status = "FAILED" if run_id == "r3" else "FINISHED"
        made.info = SimpleNamespace(run_id=run_id, run_name=f"name-{run_id}", status=status)
        return made

    verdict = {
        "seglab.worst_class": "pole",  # the run's own choice, whatever the IoUs say
        "seglab.hidden_failure": "true",
        "seglab.hidden_failure_classes": "pole,sign",
    }
    early = {"seglab.failure_reason": "ValueError: the val split has no labelled pixel"}
    runs = [run("r1", verdict, "3"), run("r2", {}, "None"), run("r3", early, "0")]
    rows = [
        # run, epoch, metric, class, value
        ("r2", 1, "val/loss", "", 0.3),
        ("r2", 2, "val/loss", "", 0.6),
        ("r2", 2, "val/iou", "sky", 0.2),
        ("r2", 2, "val/iou", "pole", 0.7),
        ("r1", 1, "val/loss", "", 0.9),
        ("r1", 2, "val/loss", "", 0.4),
        ("r1", 2, "val/miou", "", 0.5),
        ("r1", 2, "test/miou", "", 0.45),
        ("r1", 2, "val/iou", "sky", 0.9),
        ("r1", 2, "val/iou", "pole", 0.1),
    ]
    frame = pd.DataFrame(
        [
            {
                "run_id": r,
                "run_name": f"name-{r}",
                "status": "FINISHED",
                **dict.fromkeys(AXES, "x"),
                "epoch": e,
                "metric": m,
                "class": c,
                "value": v,
            }
            for r, e, m, c, v in rows
        ]
    )
    table = run_summary(frame, runs).set_index("run_id")
    assert list(table.index) == ["r1", "r2", "r3"]  # every run, in the runs' order
    assert table.loc["r1", "seed"] == 3 and table.loc["r2", "seed"] is pd.NA
    assert table.loc["r1", "configuration"] == "one configuration"
    assert (table.loc["r1", "val_loss"], table.loc["r1", "best_val_loss"]) == (0.4, 0.4)
    assert (table.loc["r2", "val_loss"], table.loc["r2", "best_val_loss"]) == (0.6, 0.3)
    assert table.loc["r1", "epochs"] == 2 and table.loc["r1", "miou"] == 0.5
    assert math.isnan(table.loc["r2", "miou"]) and math.isnan(table.loc["r2", "min_iou"])
    assert table.loc["r1", "test_miou"] == 0.45 and math.isnan(table.loc["r2", "test_miou"])
    assert table.loc["r1", ["worst_class", "hidden_failure", "hidden_classes"]].tolist() == [
        "pole",
        "true",
        "pole,sign",
    ]
    # No verdict tags (a run from before them): the worst class from the IoUs, no verdict.
    assert table.loc["r2", ["worst_class", "hidden_failure", "hidden_classes"]].tolist() == [
        "sky",
        "",
        "",
    ]
    # Failed before its first epoch: listed all the same, with its reason and no metrics.
    assert table.loc["r3", ["status", "epochs", "failure_reason"]].tolist() == [
        "FAILED",
        0,
        "ValueError: the val split has no labelled pixel",
    ]
    assert table.loc["r3", ["val_loss", "miou", "min_iou"]].isna().all()
    assert table.loc[["r1", "r2"], "failure_reason"].tolist() == ["", ""]


TWO_LOSSES = summary(
    [  # CE near 0.02 and Dice near 0.7: never one scale
        ("a", "ce,none", "FINISHED", "ce", 0.020, 0.00, 0.79, "speck"),
        ("b", "ce,median", "FINISHED", "ce", 0.030, 0.48, 0.83, "speck"),
        ("c", "ce,enet", "FINISHED", "ce", 0.025, 0.30, 0.81, "speck"),
        ("d", "dice,none", "FINISHED", "dice", 0.700, 0.70, 0.90, "speck"),
        ("e", "dice,median", "FINISHED", "dice", 0.750, 0.06, 0.58, "disk"),
    ]
).assign(val_ce=[0.020, 0.031, 0.024, 0.040, 0.090], hidden_classes=["speck", "", "", "", "disk"])


def test_across_loss_functions_the_correlation_and_the_lowest_loss_use_val_ce():
    ranked = rankings(TWO_LOSSES)
    assert ranked.overall_column == "val_ce"
    # val_ce ranks a c b d e = 1 2 3 4 5 and min_iou ranks a e c b d: the pairs (1,1) (3,4)
    # (2,3) (4,5) (5,2) give 1 - 6 * 12 / (5 * 24) = 0.4; within CE both rank a c b: 1.0
    assert ranked.spearman_loss_vs_min_iou == pytest.approx(0.4)
    assert ranked.spearman_within_loss == pytest.approx(
        {"ce": 1.0, "dice": float("nan")}, nan_ok=True
    )
    assert ranked.best_by_loss == "ce,none"  # lowest val_ce, not Dice's or CE's own loss


def test_one_loss_function_correlates_its_own_loss():
    ranked = rankings(TWO_LOSSES[TWO_LOSSES["loss"] == "ce"])
    assert ranked.overall_column == "val_loss"
    assert ranked.spearman_loss_vs_min_iou == pytest.approx(1.0)  # a < c < b both ways
    assert ranked.spearman_within_loss == {}


def test_the_report_sentence_names_what_it_correlates():
    from seglab.analysis.report import spearman_sentence

    assert spearman_sentence(rankings(TWO_LOSSES)) == (
        "Spearman correlation of val CE with worst-class IoU across configurations (the losses "
        "are of different functions, whose values are not on one scale): +0.40; of each val "
        "loss within its own loss function: loss=ce +1.00; loss=dice n/a (needs 3 and some "
        "spread in both) (a loss that tracked the failing class would be near -1)."
    )


def test_the_notebooks_story_is_told_within_one_loss_function():
    from seglab.analysis.runs import loss_story

    lowest, best = loss_story(TWO_LOSSES)
    assert (lowest.run_id, best.run_id) == ("a", "b")  # CE's lowest hides speck; CE's best
    no_hiding = TWO_LOSSES.assign(hidden_classes="")
    lowest, best = loss_story(no_hiding[no_hiding["loss"] == "dice"])
    assert (lowest.run_id, best.run_id) == ("d", "d")
    lowest, _ = loss_story(TWO_LOSSES.iloc[::-1])  # Dice first: its lowest (d) hides nothing
    assert lowest.run_id == "a"


def test_pooling_runs_of_different_datasets_classes_or_epochs_is_named(store):
    from seglab.analysis.runs import pooling_groups, pooling_warning

    same = {"data._target_": "shapes", "trainer.epochs": "6"}
    first = store({"seglab.class_names": '["bg", "fg"]'}, same)
    second = store({"seglab.class_names": '["bg", "fg"]'}, same)
    assert pooling_warning([first, second]) is None
    other = store({"seglab.class_names": '["bg", "road"]'}, {**same, "trainer.epochs": "20"})
    callback = store({}, {"callback.output": "softmax"})  # records neither: not counted
    assert pooling_warning([first, other, callback]) == (
        "**Runs that are not comparable are pooled here**: 2 class sets "
        '(seglab.class_names: \\["bg", "fg"\\], \\["bg", "road"\\]); 2 epoch counts '
        "(trainer.epochs: 20, 6). The verdict and the rankings below take each group of "
        "comparable runs apart; the tables of runs and the figures show them all (report on "
        "each apart for its own figures: one sweep, or an experiment per dataset)."
    )
    groups = pooling_groups([first, second, other, callback])
    assert list(groups.values()) == [
        'seglab.class_names=["bg", "fg"], trainer.epochs=6',
        'seglab.class_names=["bg", "fg"], trainer.epochs=6',
        'seglab.class_names=["bg", "road"], trainer.epochs=20',
        "",  # records neither
    ]
    assert set(pooling_groups([first, second]).values()) == {""}


def test_the_story_of_pooled_runs_is_told_within_each_group():
    from seglab.analysis.story import verdict

    pooled = pd.concat(
        [TWO_LOSSES.assign(group="data.root=/a"), TWO_LOSSES.assign(group="data.root=/b")]
    ).reset_index(drop=True)
    pooled.loc[5:, "run_id"] = [f"{r}2" for r in "abcde"]
    pooled.loc[5, "val_loss"] = 0.5  # /b's CE run a2 is no longer its lowest loss
    ious = pd.DataFrame({"speck": [0.0, 0.48, 0.3, 0.7, 0.5] * 2}, index=pooled.run_id)
    lines = verdict(pooled, ious)
    assert lines[0].startswith(
        "**The lowest val loss hides a failing class in 1 of 4 loss functions** (ce, data.root=/a)"
    )
    assert lines[1].startswith("**loss=ce, data.root=/a: the lowest val loss hides speck.**")
    assert lines[3].startswith("loss=ce, data.root=/b: the lowest val loss hides no class: ce,enet")


def test_the_verdict_tells_each_loss_functions_story_with_a_link_that_charts_it():
    from seglab.analysis.links import UiLinks
    from seglab.analysis.story import terminal_text, verdict

    ious = pd.DataFrame(
        {"speck": [0.0, 0.48, 0.30, 0.70, 0.5], "disk": [0.9, 0.9, 0.9, 0.9, 0.06]},
        index=list("abcde"),
    )
    experiments = dict.fromkeys("abcde", "7")
    lines = verdict(TWO_LOSSES, ious, UiLinks("http://ui:9"), experiments)
    assert lines[0] == (
        "**The lowest val loss hides a failing class in 1 of 2 loss functions** (ce): a lower "
        "loss did not mean a better worst class."
    )
    chart = (
        "http://ui:9/#/metric/?runs=%5B%22a%22%2C%22b%22%5D&metric=%22val%2Floss%22"
        "&experiments=%5B%227%22%5D&plot_metric_keys=%5B%22val%2Floss%22%2C%22val%2Fiou%2F"
        "speck%22%5D&x_axis=step&show_point=true"
    )
    assert lines[1] == (
        "**loss=ce: the lowest val loss hides speck.** ce,none has the lowest val/loss (0.0200) "
        "and speck IoU 0.000; ce,median reaches 0.480 at val/loss 0.0300. "
        f"[Chart val/loss beside val/iou/speck]({chart})"
    )
    assert lines[2].startswith(  # Dice's lowest (d) hides nothing: d alone is charted
        "loss=dice: the lowest val loss hides no class: dice,none (val/loss 0.7000), whose "
        "worst class is speck at IoU 0.700. [Chart val/loss beside val/iou/speck]"
        "(http://ui:9/#/metric/?runs=%5B%22d%22%5D&"
    )
    assert terminal_text(lines[1]).endswith(f"0.0300. Chart val/loss beside val/iou/speck: {chart}")
    # without a UI, no link; all runs hiding nothing: said in one line
    quiet = verdict(TWO_LOSSES.assign(hidden_classes=""), ious)
    assert quiet[0] == "The lowest val loss hides no failing class in any of the 2 loss functions."
    assert "](" not in "".join(quiet)
    assert verdict(TWO_LOSSES.iloc[:0], ious) == []


def test_a_lowest_loss_that_hides_a_class_no_run_of_its_loss_does_better_on_is_said_so():
    from seglab.analysis.story import verdict

    alone = TWO_LOSSES[TWO_LOSSES.run_id == "e"]  # Dice, median: hides disk, the only run
    ious = pd.DataFrame({"disk": [0.06]}, index=["e"])
    assert verdict(alone, ious)[1] == (
        "**loss=dice: the lowest val loss hides disk**, and no run of this loss function does "
        "better on its worst class: dice,median (val/loss 0.7500, disk IoU 0.060)."
    )


def test_the_ui_address_is_a_servers_own_or_the_local_ui_port(monkeypatch):
    from seglab.analysis.links import ui_address

    monkeypatch.delenv("SEGLAB_UI_PORT", raising=False)
    assert ui_address("http://team:8080/") == "http://team:8080"
    assert ui_address("sqlite:///x/mlflow.db") == "http://127.0.0.1:5000"
    monkeypatch.setenv("SEGLAB_UI_PORT", "5055")
    assert ui_address("sqlite:///x/mlflow.db") == "http://127.0.0.1:5055"
    monkeypatch.setenv("SEGLAB_UI_PORT", "ui")
    with pytest.raises(ValueError, match=r"SEGLAB_UI_PORT='ui' is no port: give a number"):
        ui_address("sqlite:///x/mlflow.db")


def test_history_from_the_artifact_equals_the_metric_history_and_takes_no_per_key_call(
    sqlite_uri, monkeypatch
):
    from mlflow.entities import Metric

    from seglab.analysis.runs import history
    from seglab.tracking.tracker import MlflowTracker

    tracker = MlflowTracker(tracking_uri=sqlite_uri)
    with tracker.start_run({}):  # a run of 2 epochs, then one more after a resume
        for epoch in (1, 2):
            tracker.log_metrics({"val/loss": 1 / epoch, "val/iou/sky": 0.3 * epoch}, epoch)
    first = tracker.run_id
    with tracker.start_run({}, resume_run_id=first):
        tracker.log_metrics({"val/loss": 0.25, "val/iou/sky": float("nan")}, 3)
        tracker.log_metrics({"test/iou/sky": float("inf")}, 2)
    with tracker.start_run({}):  # a run whose owner also logged a key of its own, afterwards
        tracker.log_metrics({"val/loss": 0.5}, 1)
        tracker.client.log_batch(tracker.run_id, metrics=[Metric("mine", 7.0, 0, 1)])
        tracker.client.log_batch(tracker.run_id, metrics=[Metric("val/loss", 0.4, 0, 2)])
    runs = [tracker.client.get_run(r) for r in (first, tracker.run_id)]
    calls = []
    original = tracker.client.get_metric_history
    monkeypatch.setattr(
        MlflowClient,
        "get_metric_history",
        lambda self, run, key: calls.append(key) or original(run, key),
    )
    from_store = history(tracker.client, runs, from_artifact=False)
    assert len(calls) == 5  # one call per run and key
    calls.clear()
    fast = history(tracker.client, runs)
    assert sorted(calls) == ["mine", "val/loss"]  # only the second run's keys it did not write
    pd.testing.assert_frame_equal(fast, from_store)
    assert len(fast[fast.run_id == first]) == 7


def test_the_history_artifact_reads_the_store_only_for_a_run_it_did_not_start(
    sqlite_uri, monkeypatch
):
    from seglab.tracking.tracker import MlflowTracker

    calls = []
    original = MlflowClient.get_metric_history
    monkeypatch.setattr(
        MlflowClient,
        "get_metric_history",
        lambda self, run, key: calls.append(key) or original(self, run, key),
    )
    tracker = MlflowTracker(tracking_uri=sqlite_uri)
    with tracker.start_run({}):
        tracker.log_metrics({"val/loss": 0.5, "val/iou/sky": 0.1}, 1)
        tracker.log_metrics({"val/loss": 0.4, "val/iou/sky": 0.2}, 2)
    assert calls == []  # a run it created has no earlier points
    resumed = MlflowTracker(tracking_uri=sqlite_uri)  # as a resume in another process
    with resumed.start_run({}, resume_run_id=tracker.run_id):
        resumed.log_metrics({"val/loss": 0.3}, 3)
        resumed.log_metrics({"val/loss": 0.2}, 4)
    assert sorted(calls) == ["val/iou/sky", "val/loss"]  # once, when the run was reopened
