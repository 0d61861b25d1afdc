"""The metrics under real DDP: two CPU processes (gloo) against the single-process answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seiko.metrics import InternalDiversity, TopKAUC, TopKMean, Uniqueness, top_k_auc

NAN = float("nan")
VALUES = torch.tensor([1.0, NAN, 3.0, 2.0, NAN, 5.0, 0.0, 4.0, 6.0, NAN])
SMILES = ["CCO", "Oc1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "c1ccncc1"]


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results: dict[str, float | str] = {}

    # Every rank holds the same broadcast history (seiko's case): each call counted once.
    replicated = TopKAUC(k=2, budget=12, log_every=4)
    replicated.update(VALUES)
    results["replicated_auc"] = replicated.compute().item()

    # Rank 0 alone updates; rank 1's states stay empty but typed, so the gather works.
    rank0_only = TopKMean(k=2)
    if rank == 0:
        rank0_only.update(VALUES)
    results["rank0_only_top2"] = rank0_only.compute().item()

    # Each rank its own calls, with their global indices.
    sharded = TopKAUC(k=2, budget=12, log_every=4)
    mine = torch.arange(rank, 10, world_size)
    sharded.update(VALUES[mine], call_index=mine)
    results["sharded_auc"] = sharded.compute().item()

    # Each rank its own calls but no indices: the collision is caught.
    unindexed = TopKAUC(k=2, budget=12, log_every=4)
    unindexed.update(VALUES[mine])
    try:
        unindexed.compute()
        results["unindexed"] = "no error"
    except ValueError as err:
        results["unindexed"] = str(err)

    # Sample metrics: each rank its own designs, one rank none at all.
    uniqueness = Uniqueness()
    uniqueness.update(["AAAA", "ACGT"] if rank == 0 else ["ACGT", "CCCC"])
    results["uniqueness"] = uniqueness.compute().item()
    empty_rank = Uniqueness()
    if rank == 1:
        empty_rank.update(["AAAA", "AAAA"])
    results["uniqueness_empty_rank"] = empty_rank.compute().item()
    diversity = InternalDiversity()
    diversity.update(SMILES[rank::world_size])
    results["diversity"] = diversity.compute().item()

    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed and the fork start method",
)
def test_metrics_under_two_process_ddp(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # both processes are on this machine
    # fork, not spawn: the children inherit the imported torch instead of importing it anew (~10 s)
    mp.start_processes(
        _worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    diversity = InternalDiversity()
    diversity.update(SMILES)
    expected = {
        "replicated_auc": top_k_auc(VALUES, k=2, budget=12, log_every=4).item(),
        "rank0_only_top2": 5.5,
        "sharded_auc": top_k_auc(VALUES, k=2, budget=12, log_every=4).item(),
        "uniqueness": 3 / 4,
        "uniqueness_empty_rank": 1 / 2,
        "diversity": diversity.compute().item(),
    }
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "pass their global call_index" in results.pop("unindexed")
        assert results == pytest.approx(expected, abs=1e-6)
