"""torchrun entry for gpu_check.sh when there are more ranks than GPUs: every rank uses
cuda:0 and the gloo backend (nccl refuses two ranks on one GPU)."""

import sys

from mhub_fmcib_train.config import PretrainConfig, load_config
from mhub_fmcib_train.pretrain import init_distributed, run_pretrain

if __name__ == "__main__":
    import os
    from pathlib import Path

    import torch.distributed as dist

    init_distributed(int(os.environ["WORLD_SIZE"]), backend="gloo")
    res = run_pretrain(load_config(Path(sys.argv[1]), PretrainConfig), local_rank=0)
    if dist.get_rank() == 0:
        print(f"first loss {res.first_loss:.4f}, last loss {res.last_loss:.4f}")
    dist.destroy_process_group()
