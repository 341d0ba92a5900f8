"""trainer.strategy=mirrored on two logical CPU devices against the default strategy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from seglab.data.pipeline import batches
from seglab.training.trainer import Trainer, replica_safe_batch_size

SCRIPT = Path(__file__).parent / "strategy_run.py"
PIXELS = 32 * 32


def histories(num_val: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(num_val)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs() -> dict:
    # 9 validation images in batches of 4: the last batch has 1 image for 2 replicas
    return histories(num_val=9)


@pytest.mark.slow
def test_mirrored_runs_on_two_replicas(runs):
    assert (runs["default"]["replicas"], runs["mirrored"]["replicas"]) == (1, 2)


@pytest.mark.slow
def test_losses_divide_by_the_replica_count_as_keras_losses_do(runs):
    # Keras multiplies a replica's loss back by the count when it reports it.
    assert (runs["default"]["six_scaled"], runs["mirrored"]["six_scaled"]) == (6.0, 3.0)


@pytest.mark.slow
def test_confusion_matrix_counts_every_validation_pixel_once_across_replicas(runs):
    for strategy in ("default", "mirrored"):
        assert runs[strategy]["confusion_total"] == [9 * PIXELS] * 3, strategy


@pytest.mark.slow
def test_mirrored_history_matches_the_default_strategy(runs):
    # Same data order (trainer.shuffle=false), same global batch, replica gradients summed:
    # equal up to float summation order (measured: under 1e-6 relative after 3 epochs).
    default, mirrored = runs["default"], runs["mirrored"]
    np.testing.assert_allclose(mirrored["train_loss"], default["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(mirrored["val_loss"], default["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(mirrored["iou"], default["iou"], atol=1e-3)


# (validation images, batch size, replicas, the batch size used for validation)
BATCH_CASES = [
    (9, 4, 1, 4),  # one replica: unchanged
    (8, 4, 2, 4),  # no remainder
    (10, 4, 2, 4),  # remainder 2: one image per replica
    (101, 8, 2, 8),  # CamVid's val split: remainder 5
    (9, 4, 2, 6),  # remainder 1 at 4 and 2: the nearest larger even size, 6 (6 + 3)
    (9, 8, 2, 6),  # remainder 1 at 8: 6 is the nearest smaller size that fits
    (13, 4, 4, 8),  # 4 replicas: 8 + 5
    (6, 16, 2, 16),  # one batch of 6: even
]


@pytest.mark.parametrize(("images", "batch", "replicas", "expected"), BATCH_CASES)
def test_validation_batch_size_leaves_no_replica_empty(images, batch, replicas, expected):
    size = replica_safe_batch_size(images, batch, replicas)
    assert size == expected
    batch_sizes = [min(size, images - start) for start in range(0, images, size)]
    assert batch_sizes[0] % replicas == 0  # the first batch splits evenly (Keras builds on it)
    assert min(batch_sizes) >= replicas or replicas == 1  # no replica gets an empty share


def test_validation_that_no_batch_size_fits_is_refused():
    with pytest.raises(ValueError, match="3 images cannot be batched for 2 replicas"):
        replica_safe_batch_size(3, 4, 2)


@pytest.mark.parametrize(("images", "kept"), [(9, [4, 4]), (10, [4, 4, 2]), (8, [4, 4])])
def test_training_drops_a_last_batch_smaller_than_the_replicas_and_keeps_its_length(images, kept):
    import tensorflow as tf

    stream = tf.data.Dataset.from_tensor_slices(
        (tf.zeros((images, 2, 2, 3)), tf.zeros((images, 2, 2), tf.int32))
    )
    batched = batches(stream, 4, shuffle_seed=0, min_batch=2)
    assert int(batched.cardinality()) == len(kept)  # known: Keras counts its steps right
    assert [int(x.shape[0]) for x, _ in batched] == kept


def test_unknown_strategy_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"trainer.strategy='tpu' is not one of \['default'"):
        Trainer(lambda: None, strategy="tpu")


def test_multi_worker_is_refused_with_the_upstream_reason_and_the_alternatives():
    with pytest.raises(
        ValueError, match=r"'multi_worker' is not available: .*keras#20585.*mirrored"
    ):
        Trainer(lambda: None, strategy="multi_worker")


@pytest.mark.slow
def test_keras_fit_still_fails_under_multi_worker_mirrored_strategy():
    # The reason seglab refuses trainer.strategy=multi_worker. When this test fails because
    # fit works, a Keras release has fixed it: allow the strategy again and test seglab on it.
    ports = [str(free_port()) for _ in range(2)]
    script = str(Path(__file__).parent / "multi_worker_canary.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [
        subprocess.Popen(
            [sys.executable, script, str(index), *ports], env=env, stdout=subprocess.PIPE, text=True
        )
        for index in range(2)
    ]
    lines = [worker.communicate(timeout=300)[0].strip().splitlines()[-1] for worker in workers]
    for line in lines:
        assert line.startswith("ValueError: Attempt to convert a value (PerReplica"), line
