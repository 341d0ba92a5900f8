"""Hydra's cluster launchers: the SLURM and Ray presets (sweeps on real clusters run in
tests/test_slurm.py and tests/test_ray.py, a submitit_local one over HTTP in
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


def test_ray_cluster_launcher_joins_a_running_cluster_without_sizing_its_object_store():
    launcher = compose_train("hydra/launcher=ray_cluster", hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.init.address == "auto"
    # present and null: the plugin's setdefault leaves it, and Ray reads None as not given
    assert "object_store_memory" in launcher.ray.init
    assert launcher.ray.init.object_store_memory is None
    assert launcher.ray.remote.num_cpus == 1
