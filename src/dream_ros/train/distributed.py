"""DistributedDataParallel glue: the same train command runs alone or under ``torchrun``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them training is a
single process. CPU uses the gloo backend, CUDA nccl.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: Optional[int] = None
    enabled: bool = False


def setup() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")), enabled=True)


def wrap(net, ctx: DistContext, device):
    if not ctx.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP
    if device.type == "cuda":
        return DDP(net, device_ids=[device.index])
    return DDP(net)


def any_flag(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if any rank raised the flag (so all ranks leave the epoch together)."""
    if not ctx.enabled:
        return bool(flag)
    import torch
    import torch.distributed as dist
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def autocast(device):
    """fp16 autocast on CUDA; a no-op on CPU (bf16 autocast is slower than fp32 on small CPUs)."""
    if device.type == "cuda":
        import torch
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
