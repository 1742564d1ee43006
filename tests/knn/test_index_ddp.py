"""Two gloo processes build the training index from the same table: identical partitions."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from esseg.knn.index import RefreshedIndex


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    table = torch.nn.functional.normalize(torch.randn(3000, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    # A different seed per rank: without the broadcast the partitions would differ.
    index = RefreshedIndex(refresh_every=5, nlist=30, seed=rank)
    index.step(table, 0)
    parts = [torch.empty_like(index.index.assign) for _ in range(2)]
    dist.all_gather(parts, index.index.assign)
    q = table[:200] + 0.01
    found = index.search(q, 4, database=table)[1]
    both = [torch.empty_like(found) for _ in range(2)]
    dist.all_gather(both, found)
    if rank == 0:
        torch.save({"assign": parts, "found": both}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_search_identical_partitions(tmp_path):
    out = str(tmp_path / "ranks.pt")
    port = 29500 + os.getpid() % 1000
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    result = torch.load(out)
    assert torch.equal(result["assign"][0], result["assign"][1])
    assert torch.equal(result["found"][0], result["found"][1])
    lone = RefreshedIndex(refresh_every=5, nlist=30, seed=1)  # rank 1's own seed, no broadcast
    table = torch.nn.functional.normalize(torch.randn(3000, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    lone.step(table, 0)
    assert not torch.equal(lone.index.assign, result["assign"][1])  # the test can tell
