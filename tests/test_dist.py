"""One place reads the launchers' rank/world size, one picks the device (v2a/dist.py)."""

import pytest
import torch

from v2a.dist import Placement, pick_device, placement


@pytest.mark.parametrize("env,want", [
    ({}, Placement(0, 1, 0)),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Placement(3, 4, 1)),  # torchrun
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2"}, Placement(5, 8, 2)),  # srun tasks
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, Placement(2, 3, 0)),  # job array
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "7", "SLURM_NTASKS": "9"}, Placement(1, 2, 0)),  # torchrun wins
])
def test_placement_from_each_launcher(env, want):
    assert placement(env) == want


@pytest.mark.parametrize("env,msg", [({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
                                     ({"RANK": "2", "WORLD_SIZE": "2"}, "need 0 <= rank < world size")])
def test_bad_launcher_values_say_which(env, msg):
    with pytest.raises(ValueError, match=msg):
        placement(env)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu") == pick_device(None)
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda:0")
