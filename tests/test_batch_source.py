"""How training batches are drawn: shares of distributed ranks, the device-resident
store, and the compiled training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.data.store import BatchSource, PatchStore
from anomaly.io import write_json


@pytest.fixture
def store(tmp_path) -> PatchStore:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "patches.npy", rng.integers(0, 256, (23, 1, 4, 4), dtype=np.uint8))
    np.save(tmp_path / "masks.npy", np.zeros((23, 4, 4), dtype=np.uint8))
    write_json(tmp_path / "meta.json", {"channels": 1, "tile_size": 4})
    return PatchStore(tmp_path)


def _epochs(source: BatchSource, count: int = 2) -> list[list[torch.Tensor]]:
    return [list(source) for _ in range(count)]


def test_ranks_split_every_global_batch(store):
    ids = np.arange(3, 23)  # 20 tiles: global batches of 8, 8 and 4
    single = _epochs(BatchSource(store, ids, 8, True, seed=1))
    ranks = [_epochs(BatchSource(store, ids, 8, True, 1, rank, 3, "batch")) for rank in range(3)]
    for epoch, batches in enumerate(single):
        # Every rank takes the same number of steps; the last batch of 4 tiles is
        # shared as 2, 1 and 1.
        assert {len(r[epoch]) for r in ranks} == {len(batches)}
        for step, batch in enumerate(batches):
            together = torch.cat([r[epoch][step] for r in ranks])
            assert torch.equal(together, batch)
    assert len(BatchSource(store, ids, 8, True, 1, 0, 3, "batch")) == 3


def test_a_last_batch_smaller_than_the_ranks_is_dropped_everywhere(store):
    ids = np.arange(9)  # batches of 8 and 1: the 1-tile batch cannot feed 2 ranks
    for rank in range(2):
        source = BatchSource(store, ids, 8, True, 0, rank, 2, "batch")
        assert len(source) == len(list(source)) == 1


def test_blocks_in_rank_order_are_the_single_process_order(store):
    ids = np.arange(23)
    single = torch.cat(list(BatchSource(store, ids, 5, True, seed=2)))
    blocks = [torch.cat(list(BatchSource(store, ids, 5, True, 2, r, 2, "block"))) for r in (0, 1)]
    assert torch.equal(torch.cat(blocks), single)


def test_device_resident_tiles_give_the_same_batches(store):
    ids = np.array([20, 3, 7, 11, 0, 15, 9])
    host = _epochs(BatchSource(store, ids, 3, True, seed=4), 3)
    resident = BatchSource(store, ids, 3, True, seed=4)
    resident.to_device(torch.device("cpu"))
    assert resident.resident is not None and resident.resident.dtype == torch.uint8
    for a, b in zip(host, _epochs(resident, 3), strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_compiled_training_step_trains_like_the_eager_one(store):
    """`train.compile: true`: the step runs through torch.compile (inductor on CPU)."""
    from anomaly.models.registry import build_model, model_config
    from anomaly.models.training import fit
    from anomaly.params import TrainConfig

    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model("ae", model_config("ae", {"hidden": [8], "latent_dim": 2}), 1, 4)
        batches = BatchSource(store, np.arange(16), 8, True, seed=0)
        val = BatchSource(store, np.arange(16, 23), 8, False, seed=0)
        cfg = TrainConfig(epochs=2, batch_size=8, compile=compiled)
        result = fit(model, batches, val, cfg, None, torch.device("cpu"))
        losses[compiled] = result.best_val_loss
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_small_sets_repeat_until_an_epoch_has_enough_steps(store):
    ids = np.arange(10)  # 10 tiles, batches of 4: 3 steps per pass
    plain = BatchSource(store, ids, 4, True, seed=0)
    assert len(plain) == len(list(plain)) == 3
    lifted = BatchSource(store, ids, 4, True, seed=0, min_batches=7)
    batches = list(lifted)
    assert len(lifted) == len(batches) == 8  # 3 passes of 10 tiles = 30 tiles: >= 7 batches
    # Every pass is a full permutation: each tile is seen equally often.
    seen = torch.cat(batches)
    tiles = torch.stack([store.read(np.array([i]))[0] for i in ids])
    counts = [(seen == t).flatten(1).all(1).sum().item() for t in tiles]
    assert counts == [3] * 10
    # A set that already has enough batches is read once.
    assert BatchSource(store, np.arange(23), 4, True, 0, min_batches=5).passes == 1


def _tile_indices(store: PatchStore, batches: list[torch.Tensor]) -> list[int]:
    tiles = torch.stack([store.read(np.array([i]))[0] for i in range(len(store.tiles))])
    seen = torch.cat(batches)
    return [int((tiles == t).flatten(1).all(1).nonzero()[0]) for t in seen]


def test_large_sets_cap_an_epoch_and_walk_on_through_the_tiles(store):
    ids = np.arange(23)  # batches of 4: 6 steps per pass; capped at 2 (8 tiles)
    capped = BatchSource(store, ids, 4, True, seed=0, max_batches=2)
    epochs = _epochs(capped, 3)
    assert len(capped) == 2 and [len(e) for e in epochs] == [2, 2, 2]
    order = _tile_indices(store, [b for e in epochs for b in e])
    # Epochs continue one permutation: the first 23 draws are every tile once.
    assert sorted(order[:23]) == list(range(23))
    assert len(order) == 24
    # Different epochs see different tiles, not the same share again.
    assert set(order[:8]) != set(order[8:16])


def test_the_cap_leaves_sets_below_it_exactly_as_they_were(store):
    ids = np.arange(23)
    plain = _epochs(BatchSource(store, ids, 4, True, seed=3), 3)
    roomy = _epochs(BatchSource(store, ids, 4, True, seed=3, max_batches=6), 3)
    assert all(
        torch.equal(a, b)
        for e, f in zip(plain, roomy, strict=True)
        for a, b in zip(e, f, strict=True)
    )
    # With the small-set repeats too, the cap only bites above their total.
    both = BatchSource(store, np.arange(10), 4, True, 0, min_batches=7, max_batches=8)
    assert (both.passes, both.cap, len(both)) == (3, 0, 8)
    # Validation (no shuffle) is never capped: early stopping compares whole passes.
    assert len(BatchSource(store, ids, 4, False, 0, max_batches=2)) == 6


def test_capped_epochs_split_across_ranks_like_one_process(store):
    ids = np.arange(23)
    single = _epochs(BatchSource(store, ids, 8, True, 1, max_batches=2))
    ranks = [
        _epochs(BatchSource(store, ids, 8, True, 1, rank, 2, "batch", max_batches=2))
        for rank in range(2)
    ]
    for epoch, whole in enumerate(single):
        for step, batch in enumerate(whole):
            joined = torch.cat([ranks[r][epoch][step] for r in range(2)])
            assert torch.equal(joined, batch)


def test_max_steps_per_epoch_must_leave_room_for_the_minimum():
    from anomaly.errors import ParamsError
    from anomaly.params import TrainConfig

    TrainConfig(max_steps_per_epoch=20).validate("train", "params.yaml")
    with pytest.raises(ParamsError, match="train.max_steps_per_epoch"):
        TrainConfig(max_steps_per_epoch=5).validate("train", "params.yaml")
