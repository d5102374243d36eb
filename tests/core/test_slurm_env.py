"""torch.distributed's variables from SLURM's (rlrun.runtime.slurm_env), by hand-written examples."""
from __future__ import annotations

import pytest

from rlrun.runtime.slurm_env import first_host, launcher_vars


@pytest.mark.parametrize("nodelist, host", [
    ("localhost", "localhost"),
    ("node7,node8", "node7"),
    ("gpu[003-004,9]", "gpu003"),
    ("gpu[12,3],cpu1", "gpu12"),
    ("a-b[01-02]", "a-b01"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


JOB = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
       "SLURM_JOB_NODELIST": "gpu[003-004]", "SLURM_JOB_ID": "123456"}


def test_a_four_task_job_gives_rank_world_master_and_a_port_from_the_job_id():
    assert launcher_vars(JOB) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                  "MASTER_ADDR": "gpu003", "MASTER_PORT": str(15000 + 123456 % 20000)}
    assert launcher_vars(JOB)["MASTER_PORT"] == "18456"


def test_a_launchers_variables_win_and_one_task_is_no_world():
    assert launcher_vars({**JOB, "RANK": "0", "WORLD_SIZE": "2"}) is None
    assert launcher_vars({**JOB, "SLURM_NTASKS": "1"}) is None
    assert launcher_vars({}) is None
    given = launcher_vars({**JOB, "MASTER_ADDR": "head", "MASTER_PORT": "29400"})
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("head", "29400")
