"""Sweeps on Hydra's cluster launchers: jobs in other processes still nest under the parent run."""

import pytest
from conftest import assert_children_complete, compose_train, run_sweep


@pytest.mark.slow
def test_submitit_local_jobs_in_their_own_processes_are_children_of_the_parent(tmp_path):
    _, client, (parent,), children = run_sweep(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15", "loss=ce,dice"
    )
    # submitit started each job as a process of its own, with its own log folder.
    jobs = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2 and all(any(j.glob("*_log.out")) for j in jobs)
    assert sorted(c.info.run_name for c in children) == ["loss=ce", "loss=dice"]
    assert parent.info.status == "FINISHED"
    assert_children_complete(client, parent, children)


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
