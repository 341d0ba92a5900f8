"""Hydra's cluster launchers: the SLURM config (a submitit_local sweep over HTTP runs in
tests/test_tracking_server.py)."""

from conftest import compose_train


def test_slurm_launcher_config_takes_a_partition_and_asks_for_one_gpu_per_task():
    hydra = compose_train(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", hydra_config=True
    ).hydra
    launcher = hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_task, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.timeout_min == 120 and launcher.cpus_per_task == 8
    assert launcher.submitit_folder == f"{hydra.sweep.dir}/.submitit/%j"  # logs beside the sweep
    default = compose_train("hydra/launcher=slurm", hydra_config=True).hydra.launcher
    assert default.partition is None  # the cluster's default partition
