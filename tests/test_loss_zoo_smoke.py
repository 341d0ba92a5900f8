"""Every loss option trains one smoke epoch with a weighted scheme, in process."""

import math

import pytest
from conftest import compose_train
from mlflow.tracking import MlflowClient

from seglab.paths import config_dir
from seglab.train import run

LOSSES = sorted(p.stem for p in (config_dir() / "loss").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_with_dataset_class_weights(loss, tmp_path):
    overrides = [
        "debug=smoke",
        "trainer.epochs=1",
        f"loss={loss}",
        "class_weights=median_frequency",
        f"paths.output_dir={tmp_path}",
    ]
    if loss == "bce_minus_dice":
        overrides.append("model.output_activation=sigmoid")
    cfg = compose_train(*overrides)
    final = run(cfg)
    assert math.isfinite(final.val_loss) and math.isfinite(final.val_ce)
    assert final.loss_share.shape == (5,)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (only,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    assert only.info.status == "FINISHED"


@pytest.mark.slow
def test_per_batch_weights_train_with_a_pixel_loss(tmp_path):
    cfg = compose_train(
        "debug=smoke",
        "trainer.epochs=1",
        "class_weights=per_batch",
        f"paths.output_dir={tmp_path}",
    )
    assert math.isfinite(run(cfg).val_loss)
