"""Schema versions: what each version changed in the Parquet tables (``beamscope migrate``)."""

from __future__ import annotations

from dataclasses import dataclass, field


# Migrations (``beamscope migrate``): what each schema version changed in the Parquet tables, so
# that a warehouse of the version before it is upgraded in place. A version that changes anything
# else (keys, meanings) must not be listed: warehouses older than it are refused (re-trace).
# Vector tables are never rewritten: readers take float32 or float16 vectors, null or not.
@dataclass(frozen=True)
class Migration:
    added: dict[str, tuple[str, ...]] = field(default_factory=dict)  # nullable columns (NULL in old rows)
    dropped: dict[str, tuple[str, ...]] = field(default_factory=dict)  # columns now held elsewhere
    recast: dict[str, tuple[str, ...]] = field(default_factory=dict)  # columns stored narrower
    run_tables: tuple[str, ...] = ()  # run tables new in this version, derived from the old runs


MIGRATIONS: dict[int, Migration] = {
    2: Migration(
        added={
            "source_tokens": ("nn_agreement",),
            "target_steps": ("nn_agreement", "nn_ref_agreement"),
            "reference_steps": ("nn_agreement",),
        }
    ),
    3: Migration(
        dropped={"target_steps": ("topk_tokens",)},
        recast={"attention": ("weight",), "target_steps": ("topk_probs",)},
        run_tables=("vocabulary",),
    ),
    4: Migration(run_tables=("state_clusters", "state_cluster_members")),
    5: Migration(),  # new optional tables only (attribution, attribution_steps, word_neighbours)
    6: Migration(
        added={
            "sentences": (
                "nn_encoder_min_agreement",
                "nn_attention_agreement",
                "attn_entropy_at_divergence",
                "attn_coverage_at_divergence",
            )
        }
    ),
    7: Migration(added={"target_steps": ("attn_kept_mass",), "reference_steps": ("attn_kept_mass",)}),
}


def changes_since(version: int) -> Migration:
    """Every change of the versions after ``version``, merged."""
    later = [m for v, m in sorted(MIGRATIONS.items()) if v > version]

    def merged(attr: str) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for m in later:
            for table, cols in getattr(m, attr).items():
                out[table] = (*out.get(table, ()), *cols)
        return out

    return Migration(
        merged("added"), merged("dropped"), merged("recast"), tuple(t for m in later for t in m.run_tables)
    )
