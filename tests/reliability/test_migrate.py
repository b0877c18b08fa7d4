"""Schema evolution: a version-1 warehouse is refused with a pointer to ``beamscope migrate``, which
upgrades it in place through versions 2 to 6 (resumable, idempotent, vectors untouched); a
version-3 one gets its state clusters; a newer one is refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beamscope.cli import main
from pipeline.clusters import CLUSTER_TABLES
from schemas import SCHEMA_VERSION, TABLES, SchemaVersionError
from schemas.layout import migratable, read_manifest, vectors_dir
from schemas.migrations import MIGRATIONS, changes_since
from schemas.tables import OPTIONAL_TABLES
from tests.helpers import trace_run
from tests.reliability import harness as h
from warehouse import open_warehouse

V2_COLUMNS = MIGRATIONS[2].added
ADDED = changes_since(1).added  # every column added since version 1 (NULL once migrated)


@pytest.fixture(scope="module")
def current(tmp_path_factory, tiny_dir) -> Path:
    """A warehouse written by this beamscope: a training run (so nn_agreement is filled) and a test run."""
    root = tmp_path_factory.mktemp("migrate") / "v2"
    for name, corpus in (("train", "task:dates:train:24"), ("test", "task:dates:test:12")):
        trace_run(tiny_dir, corpus, root, name, part_size=4)
    return root


def downgrade(src: Path, dst: Path) -> int:
    """Copy ``src`` and turn it into what schema version 1 wrote; return the parts changed."""
    shutil.copytree(src, dst)
    changed: set[Path] = set()
    for part in sorted((dst / "tables" / "target_steps").glob("*/*.parquet")):  # version 3's changes
        t = pq.read_table(part)
        vocab = pq.read_table(part.parent.parent.parent / "vocabulary" / part.parent.name)
        tgt = {i: tok for s, i, tok in zip(*(vocab[c].to_pylist() for c in ("side", "token_id", "token")),
                                              strict=True) if s == "tgt"}  # fmt: skip
        tokens = pa.array(
            [[tgt[i] for i in ids] for ids in t["topk_token_ids"].to_pylist()], pa.list_(pa.string())
        )
        i = t.schema.get_field_index("topk_token_ids") + 1
        t = t.add_column(i, "topk_tokens", tokens)
        t = t.set_column(i + 1, "topk_probs", t["topk_probs"].cast(pa.list_(pa.float32())))
        pq.write_table(t, part, compression="zstd")
        changed.add(part)
    for part in sorted((dst / "tables" / "attention").glob("*/*.parquet")):
        t = pq.read_table(part)
        i = t.schema.get_field_index("weight")
        pq.write_table(t.set_column(i, "weight", t["weight"].cast(pa.float32())), part, compression="zstd")
        changed.add(part)
    shutil.rmtree(dst / "tables" / "vocabulary")
    for table in CLUSTER_TABLES:  # version 4's
        shutil.rmtree(dst / "tables" / table)
    shutil.rmtree(dst / "tables" / "word_neighbours")  # version 5's (optional: not derived)
    for table, cols in ADDED.items():
        for part in sorted((dst / "tables" / table).glob("*/*.parquet")):
            pq.write_table(pq.read_table(part).drop(list(cols)), part, compression="zstd")
            changed.add(part)
    for part in (dst / "tables" / "runs").glob("*/*.parquet"):
        t = pq.read_table(part)
        i = t.schema.get_field_index("schema_version")
        pq.write_table(t.set_column(i, t.schema.field(i), pa.array([1] * t.num_rows, pa.int32())), part)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return len(changed)


def _vocab(t: pa.Table) -> list[tuple[str, int, str | None]]:
    return list(zip(*(t[c].to_pylist() for c in ("side", "token_id", "token")), strict=True))


def _vector_files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in vectors_dir(root).rglob("*")
        if p.is_file()
    }


def test_changes_by_version() -> None:
    assert (
        SCHEMA_VERSION == 7
        and migratable(6)
        and migratable(5)
        and migratable(4)
        and migratable(1)
        and migratable(2)
        and migratable(3)
        and not migratable(0)
    )
    assert not migratable(SCHEMA_VERSION + 1)
    since1 = changes_since(1)
    v6 = {
        "sentences": (
            "nn_encoder_min_agreement",
            "nn_attention_agreement",
            "attn_entropy_at_divergence",
            "attn_coverage_at_divergence",
        )
    }
    v7 = {"target_steps": ("attn_kept_mass",), "reference_steps": ("attn_kept_mass",)}
    later = v6 | v7
    assert since1.added == V2_COLUMNS | v6 | {t: (*V2_COLUMNS[t], *c) for t, c in v7.items()}
    assert since1.run_tables == ("vocabulary", *CLUSTER_TABLES)
    assert changes_since(3).run_tables == CLUSTER_TABLES and changes_since(3).added == later
    assert changes_since(4) == changes_since(5) == type(since1)(added=later)  # 5: optional tables only
    assert changes_since(6) == type(since1)(added=v7)
    assert changes_since(2).dropped == {"target_steps": ("topk_tokens",)} and changes_since(2).added == later
    assert changes_since(SCHEMA_VERSION) == type(since1)()
    for table, cols in ADDED.items():  # only nullable columns can be added by a migration
        assert all(TABLES[table].field(c).nullable for c in cols)


def test_version_1_is_refused_with_the_migrate_command(current, tmp_path, capsys) -> None:
    old = tmp_path / "v1"
    downgrade(current, old)
    msg = (
        f"{old}/manifest.json: written by schema version 1, older than {SCHEMA_VERSION}; "
        f"run `beamscope migrate --warehouse {old}` to upgrade it in place"
    )
    with pytest.raises(SchemaVersionError) as err:
        open_warehouse(old)
    assert str(err.value) == msg
    for argv in (["sql", "--warehouse", str(old), "SELECT 1"], ["errors", "--warehouse", str(old)]):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"beamscope: error: {msg}\n"


def test_migrate_killed_then_resumed_equals_the_current_warehouse(
    current, tiny_dir, tmp_path, capsys
) -> None:
    old = tmp_path / "v1"
    n_parts = downgrade(current, old)
    vectors_before = _vector_files(old)
    log = tmp_path / "migrate.log"
    # killed after its 3rd rewritten part: still version 1, still refused, some parts already new
    assert h.run_cli_child(["migrate", "--warehouse", str(old)], log, crash_at="migrate:3") == -9
    assert read_manifest(old, any_version=True)["schema_version"] == 1
    with pytest.raises(SchemaVersionError):
        open_warehouse(old)
    assert main(["migrate", "--warehouse", str(old)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{old}: migrated from schema version 1 to {SCHEMA_VERSION} "
        f"({n_parts - 3} of {n_parts} parts rewritten)\n"
    )
    assert main(["migrate", "--warehouse", str(old)]) == 0
    assert capsys.readouterr().out == f"{old}: already at schema version {SCHEMA_VERSION}; nothing to do\n"

    manifest = read_manifest(old)
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["migrations"][0]["from"] == 1
    for table in (t for t in TABLES if t not in OPTIONAL_TABLES):  # these: none to migrate
        for run in ("train", "test"):
            got, want = h.parquet_rows(old, table, run), h.parquet_rows(current, table, run)
            if table == "vocabulary":  # rebuilt from the (id, token) pairs the run's rows show
                assert got.schema == TABLES[table]
                known = {(s, i): t for s, i, t in _vocab(want)}
                seen = [(s, i, t) for s, i, t in _vocab(got) if t is not None]
                assert seen and all(known[(s, i)] == t for s, i, t in seen)
                continue
            assert got.schema == TABLES[table] or table == "runs", table
            if table == "runs":  # a run remembers the version that wrote it
                assert got["schema_version"].to_pylist() == [1]
                got, want = got.drop(["schema_version"]), want.drop(["schema_version"])
            for col in ADDED.get(table, ()):  # the new columns come back NULL
                assert got[col].null_count == got.num_rows, (table, col)
                i = want.schema.get_field_index(col)
                want = want.set_column(i, want.schema.field(i), pa.nulls(want.num_rows, pa.float32()))
            assert got.equals(want), (table, run)
    assert _vector_files(old) == vectors_before  # LanceDB tables are not touched
    assert h.temp_files(old) == []
    with open_warehouse(old) as wh:  # readable again, by the views and the marts
        assert wh.run_ids() == ["train", "test"]
        assert wh.sql("SELECT count(*) FROM topk WHERE token IS NULL").item() == 0
        assert wh.sql("SELECT count(*) FROM target_steps WHERE nn_agreement IS NOT NULL").item() == 0
        assert wh.mart("error_summary", "test").height > 0
    # and a new run can be traced into it (this one with the new columns filled)
    s = trace_run(tiny_dir, "task:dates:test:6", old, "after")
    assert s.n_sentences == 6
    t = h.parquet_rows(old, "target_steps", "after")
    assert pc.sum(pc.is_valid(t["nn_agreement"])).as_py() > 0


def test_version_3_gets_its_state_clusters(current, tmp_path) -> None:
    """Version 4 only adds the state clusters: migrate derives them, equal to what a trace writes."""
    old = tmp_path / "v3"
    shutil.copytree(current, old)
    for table in CLUSTER_TABLES:
        shutil.rmtree(old / "tables" / table)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 3}))
    with pytest.raises(SchemaVersionError, match="run `beamscope migrate"):
        open_warehouse(old)
    assert main(["migrate", "--warehouse", str(old)]) == 0
    for table in CLUSTER_TABLES:
        for run in ("train", "test"):
            got = h.parquet_rows(old, table, run)
            assert got.num_rows > 0 and got.equals(h.parquet_rows(current, table, run)), (table, run)
    with open_warehouse(old) as wh:
        assert wh.sql("SELECT count(*) FROM state_clusters WHERE cluster = 1").item() == 2


def test_newer_and_unmigratable_versions_are_refused(current, tmp_path, capsys) -> None:
    for version, expect in (
        (SCHEMA_VERSION + 1, f"written by schema version {SCHEMA_VERSION + 1}; this beamscope reads up to "
         f"{SCHEMA_VERSION} - upgrade beamscope"),
        (0, f"written by schema version 0, which cannot be migrated to {SCHEMA_VERSION}; re-trace the runs "
         "into a new warehouse"),
    ):  # fmt: skip
        root = tmp_path / f"v{version}"
        root.mkdir()
        manifest = json.loads((current / "manifest.json").read_text())
        (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": version}))
        assert main(["migrate", "--warehouse", str(root)]) == 2
        assert capsys.readouterr().err == f"beamscope: error: {root}/manifest.json: {expect}\n"
        assert json.loads((root / "manifest.json").read_text())["schema_version"] == version
