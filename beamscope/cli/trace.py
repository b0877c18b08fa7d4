"""``beamscope trace``: decode a corpus with the traced beam search into a warehouse."""

from __future__ import annotations

import argparse

from beamscope.cli.options import (
    Subparsers,
    add_bank_size,
    add_decoding,
    add_device,
    add_engine,
    add_verb,
    decoding,
    engine,
)
from schemas.tables import ATTRIBUTION_METHODS


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "trace",
        "decode a corpus with the traced beam search into a warehouse",
        "  beamscope trace --model models/dates --corpus task:dates:test:2000 --warehouse wh\n"
        "  beamscope trace --model models/dates --corpus my.txt --refs my.ref.txt --warehouse wh\n"
        "  beamscope trace --model models/dates --corpus pairs.tsv --warehouse wh --beam 1\n"
        "corpus SPEC: task:NAME:SPLIT[:N] | FILE.txt [--refs FILE] | FILE.tsv | FILE.jsonl | FILE.parquet\n"
        "A trace that is interrupted resumes when started again with the same arguments.\n",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--corpus", required=True, help="corpus SPEC (see below)")
    p.add_argument("--refs", default=None, help="reference file for a .txt corpus (one line per source)")
    p.add_argument("--warehouse", required=True, help="warehouse directory (created if missing)")
    p.add_argument("--split", default=None, help="split label (default: the task split, or test)")
    p.add_argument("--run-name", default=None, help="run id (default: MODEL.CORPUS.SPLIT)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--part-size", type=int, default=1024, help="sentences per Parquet part")
    p.add_argument("--no-vectors", action="store_true", help="do not store encoder/decoder states")
    p.add_argument(
        "--neighbours-run",
        default="auto",
        help="training run whose states the encoder/decoder blame rules use (auto: the newest traced "
        "train-split run of the same model; none: off)",
    )
    p.add_argument(
        "--agreement",
        choices=("all", "divergence"),
        default="divergence",
        help="neighbour agreement only of the states the blame reads (divergence: a wrong sentence's "
        "source tokens and its first divergence step; the other per-token values stay NULL) or of every "
        "state (all)",
    )
    add_bank_size(p)
    p.add_argument(
        "--taxonomy",
        choices=("calibrated", "default"),
        default="calibrated",
        help="blame thresholds: those of the model's latest `beamscope calibrate` in this warehouse "
        "when there is one (calibrated), or the built-in ones (default)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for decoding (default: all cores but one, at most 8)",
    )
    p.add_argument(
        "--attribution",
        choices=ATTRIBUTION_METHODS,
        default=None,
        help="also attribute every produced token (as `beamscope attribute` does; default: off)",
    )
    p.add_argument("--attribution-steps", type=int, default=32, help="integration steps of ig")
    p.add_argument(
        "--attention-top-k",
        type=int,
        default=None,
        help="long sources: store only the K largest weights of each attention row "
        "(the mean row's kept mass goes to target_steps.attn_kept_mass; default: every position)",
    )
    p.add_argument(
        "--attention-top-p",
        type=float,
        default=None,
        help="long sources: store only the fewest largest weights of each attention row that hold "
        "this share of its mass (with --attention-top-k: at most K of them)",
    )
    add_engine(p)
    add_decoding(p)
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    from pipeline.attribution import Method
    from pipeline.records.attention import AttentionKeep
    from pipeline.taxonomy import Taxonomy
    from pipeline.trace import TraceConfig, trace
    from warehouse import write_duckdb_file

    s = trace(
        TraceConfig(
            model=a.model,
            corpus=a.corpus,
            refs=a.refs,
            warehouse=a.warehouse,
            split=a.split,
            run_name=a.run_name,
            decoding=decoding(a),
            batch_size=a.batch_size,
            part_size=a.part_size,
            vectors=not a.no_vectors,
            neighbours_run=None if a.neighbours_run == "none" else a.neighbours_run,
            agreement=a.agreement,
            taxonomy=None if a.taxonomy == "calibrated" else Taxonomy(),
            bank_size=a.bank_size,
            threads=a.threads,
            device=a.device,
            engine=engine(a),
            attribution=None if a.attribution is None else Method(a.attribution, a.attribution_steps),
            attention_keep=AttentionKeep(a.attention_top_k, a.attention_top_p),
        )
    )
    write_duckdb_file(s.warehouse)
    state = "already complete" if s.already_complete else "complete"
    if s.calibration:
        c = s.calibration
        print(f"blame thresholds of the calibration on run {c['run']} ({c['created_at']})")
    print(f"run {s.run_id}: {s.n_sentences} sentences, {s.n_skipped} skipped ({state}) -> {s.warehouse}")
    return 0
