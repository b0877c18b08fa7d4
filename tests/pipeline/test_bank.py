"""The neighbour engine's banks against float64 brute force: exact below the size threshold,
agreement-equal through the IVF index, seeded samples, atomic rebuilds, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.neighbours import bank_info, build_bank, open_bank, training_states
from schemas import WarehouseError
from schemas.layout import banks_dir
from tests.warehouse.test_vectors import DIM, HALF, RUN, STEPS, decoder_table

K = 10


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices [n, k] of the exact k nearest rows of ``base`` (cosine, float64)."""
    sims = unit(queries.astype(np.float64)) @ unit(base.astype(np.float64)).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def ref_rows(bank) -> np.ndarray:
    """Each bank row's index in the fixture's 'ref' half."""
    return bank.sent_id * STEPS + bank.pos


@pytest.fixture
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """States around 40 centres (like a model's states around frequent contexts) and queries."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, DIM)) * 3
    base = centres[rng.integers(0, 40, 2 * HALF)] + rng.standard_normal((2 * HALF, DIM))
    queries = centres[rng.integers(0, 40, 300)] + rng.standard_normal((300, DIM))
    return base.astype(np.float32), queries.astype(np.float32)


def labels(n: int) -> np.ndarray:
    """The fixture's next_token of each 'ref' row (rows HALF.. of ``decoder_table``)."""
    return np.array([f"t{i % 5}" for i in range(HALF, HALF + n)], dtype=object)


def test_a_small_bank_is_exact(tmp_path, clustered) -> None:
    base, queries = clustered
    decoder_table(tmp_path, base)
    info = build_bank(tmp_path, RUN, "decoder")
    assert (info.index, info.states, info.total, info.sampled) == ("Flat", HALF, HALF, False)
    bank = open_bank(tmp_path, RUN, "decoder")
    before = queries.copy()
    rows, dist = bank.search(queries, K)
    np.testing.assert_array_equal(queries, before)  # the caller's queries are left as they were
    np.testing.assert_array_equal(ref_rows(bank)[rows], brute_force(base[HALF:], queries, K))
    exact = 1 - np.einsum("qkd,qd->qk", unit(base[HALF:][ref_rows(bank)[rows]]), unit(queries))
    np.testing.assert_allclose(dist, exact, atol=1e-5)


def test_an_ivf_bank_agrees_with_exact_search(tmp_path, clustered) -> None:
    base, queries = clustered
    decoder_table(tmp_path, base)
    info = build_bank(tmp_path, RUN, "decoder", index="IVF64,SQ8")
    bank = open_bank(tmp_path, RUN, "decoder")
    assert info.index == "IVF64,SQ8" and bank.index.nprobe > 1
    exact = labels(HALF)[brute_force(base[HALF:], queries, K)]
    found = bank.neighbour_labels(queries, K)
    wanted = labels(len(queries))  # a label per query, as the trace compares
    expected_share = (exact == wanted[:, None]).mean(1)
    share = (found == bank.codes(wanted)[:, None]).mean(1)
    assert np.mean(np.abs(share - expected_share) <= 0.1 + 1e-9) >= 0.99
    rows, _ = bank.search(queries, K)
    truth = brute_force(base[HALF:], queries, K)
    recall = np.mean([len(set(ref_rows(bank)[r]) & set(t)) / K for r, t in zip(rows, truth, strict=True)])
    assert recall >= 0.9


def test_a_bounded_bank_keeps_a_seeded_sample(tmp_path, clustered) -> None:
    base, _ = clustered
    decoder_table(tmp_path, base)
    info = build_bank(tmp_path, RUN, "decoder", max_states=500, seed=3)
    first = ref_rows(open_bank(tmp_path, RUN, "decoder"))
    assert (info.states, info.total, info.max_states, info.sampled) == (500, HALF, 500, True)
    assert "seeded sample of 2,000" in info.describe()
    assert len(set(first)) == 500 and set(first) <= set(range(HALF))
    build_bank(tmp_path, RUN, "decoder", max_states=500, seed=3)
    np.testing.assert_array_equal(ref_rows(open_bank(tmp_path, RUN, "decoder")), first)
    build_bank(tmp_path, RUN, "decoder", max_states=500, seed=4)
    assert set(ref_rows(open_bank(tmp_path, RUN, "decoder"))) != set(first)


def test_a_rebuild_replaces_the_files(tmp_path, clustered) -> None:
    """The json is the commit point; the replaced build's files are removed at once."""
    base, _ = clustered
    decoder_table(tmp_path, base)
    old = build_bank(tmp_path, RUN, "decoder")
    opened = open_bank(tmp_path, RUN, "decoder")  # a reader holding the old build
    new = build_bank(tmp_path, RUN, "decoder", max_states=100)
    names = {p.name for p in banks_dir(tmp_path, RUN).iterdir()}
    assert names == {"decoder.json", *new.files} and not set(old.files) & names
    assert opened.search(clustered[1][:3], K)[0].shape == (3, K)  # its mapping outlives the files
    assert bank_info(tmp_path, RUN, "decoder") == new


def test_refusals(tmp_path, clustered) -> None:
    base, _ = clustered
    decoder_table(tmp_path, base)
    build_bank(tmp_path, RUN, "decoder")
    with pytest.raises(WarehouseError, match="query states have 16 dimensions, the bank 32"):
        open_bank(tmp_path, RUN, "decoder").search(np.zeros((2, 16), dtype=np.float32), K)
    with pytest.raises(WarehouseError, match="run 'train' has no stored encoder states"):
        build_bank(tmp_path, RUN, "encoder")
    with pytest.raises(WarehouseError, match="--bank-size must be at least 1"):
        build_bank(tmp_path, RUN, "decoder", max_states=0)
    with pytest.raises(WarehouseError, match="run 'train' has no stored encoder states"):
        training_states(tmp_path, RUN)
