"""Run as a script (tests/test_reliability.py): ``seglab.train`` as a job under submitit's own
signal handling, as submitit starts one on SLURM, so SIGUSR2 means what it means there
(preemption or time limit: checkpoint the job, requeue it, exit).

    python tests/preempted_job.py <submitit folder> <seglab.train overrides...>
"""

import os
import sys
from pathlib import Path

import submitit
from submitit.core.job_environment import JobPaths
from submitit.core.utils import DelayedSubmission
from submitit.local.local import LocalJobEnvironment


class Job(submitit.helpers.Checkpointable):
    """Stands in for Hydra's launcher, which is checkpointable the same way."""

    def __call__(self) -> None:
        pass


folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
os.environ["SUBMITIT_LOCAL_JOB_ID"] = "1"
delayed = DelayedSubmission(Job())
delayed.set_timeout(60, 3)  # 60 minutes: SIGUSR2 now is a preemption, not the time limit
LocalJobEnvironment()._handle_signals(JobPaths(folder, job_id="1"), delayed)
sys.argv = ["seglab.train", *sys.argv[2:]]

from seglab.train import main  # noqa: E402

main()
