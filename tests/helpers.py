"""Running the ``beamscope`` command: in this process (its own ``main``, output captured), or in
a subprocess through the installed entry point where a test needs a process of its own."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

BEAMSCOPE = str(Path(sys.executable).parent / "beamscope")


def run_cli(*args: str, timeout: float = 300, isolated: bool = False) -> subprocess.CompletedProcess[str]:
    """``beamscope ARGS``: by default in this process (``beamscope.cli.main``, the same code path
    and error handling, without an interpreter start and imports per call); ``isolated`` runs the
    installed command in a subprocess (a process to kill, its own environment or Ray driver)."""
    if isolated:
        return subprocess.run([BEAMSCOPE, *args], capture_output=True, text=True, timeout=timeout)
    from beamscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, --version, usage errors
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return subprocess.CompletedProcess([BEAMSCOPE, *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code != 0, exactly one line on stderr, no traceback, mentioning ``needles``."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def trace_run(model, corpus, warehouse, name: str, decoding=None, **options):  # noqa: ANN001
    """Trace ``corpus`` with ``model`` into ``warehouse`` as run ``name``, on the CPU, quietly;
    ``decoding`` defaults to a small beam (2, top-4, 14 tokens); ``options``: other TraceConfig fields
    (neighbour agreement of every state unless ``agreement`` says otherwise)."""
    from pipeline.beam import DecodeConfig
    from pipeline.trace import TraceConfig, trace

    cfg = TraceConfig(
        model=str(model),
        corpus=str(corpus),
        warehouse=str(warehouse),
        run_name=name,
        decoding=decoding or DecodeConfig(beam=2, topk=4, max_len=14),
        device="cpu",
        **{"agreement": "all", **options},
    )
    return trace(cfg, progress=False)


def build_compare_warehouse(model: Path, root: Path) -> Path:
    """Runs of one tiny model over one corpus where every outcome occurs: 'greedy' (beam 1) and
    'beam' (beam 4) over the dates test sources with planted references (by sentence id mod 4:
    greedy's hypothesis, beam's, the true date, greedy's again: so 'beam' fixes the second kind,
    breaks the first and last, both are wrong on the third); and 'plain-greedy' and 'plain-beam',
    the same decodings over the task corpus itself (another corpus; they give the hypotheses)."""
    from pipeline.beam import DecodeConfig
    from warehouse import open_warehouse

    decodings = {
        "greedy": DecodeConfig(beam=1, topk=5, max_len=16),
        "beam": DecodeConfig(beam=4, topk=5, max_len=16),
    }
    for name, decoding in decodings.items():
        trace_run(
            model,
            "task:dates:test:48",
            root,
            f"plain-{name}",
            decoding,
            batch_size=16,
            agreement="divergence",
        )
    with open_warehouse(root) as wh:
        rows = wh.sql(
            "SELECT g.sent_id, g.source, g.reference, g.hypothesis AS greedy, b.hypothesis AS beam "
            "FROM sentences g JOIN sentences b USING (sent_id) "
            "WHERE g.run_id = 'plain-greedy' AND b.run_id = 'plain-beam' ORDER BY g.sent_id"
        )
    lines = []
    for r in rows.iter_rows(named=True):
        planted = [r["greedy"], r["beam"], r["reference"], r["greedy"]][r["sent_id"] % 4]
        lines.append(f"{r['source']}\t{planted or r['reference']}\n")
    corpus = root.parent / "planted.tsv"
    corpus.write_text("".join(lines))
    for name, decoding in decodings.items():
        trace_run(model, corpus, root, name, decoding, batch_size=16, agreement="divergence")
    return root


def build_perturb_warehouse(model: Path, root: Path) -> Path:
    """A run 'orig' whose every reference is the tiny model's own output (planted: all right), and two
    perturbation runs of it: 'orig.case' (the ``case`` kind, expect 'same') and 'orig.change' (a
    made-up 'change' kind: even sent_ids unchanged, odd ones upper-cased, the original references)."""
    from pipeline.beam import DecodeConfig
    from pipeline.corpus import Corpus, Example
    from pipeline.perturb import KINDS, variants
    from warehouse import open_warehouse

    decoding = DecodeConfig(beam=2, topk=4, max_len=16)
    trace_run(model, "task:dates:test:40", root, "plain", decoding, vectors=False)
    with open_warehouse(root) as wh:
        rows = wh.sql(
            "SELECT source, hypothesis, reference FROM sentences WHERE run_id = 'plain' ORDER BY sent_id"
        )
    corpus = root.parent / "own-outputs.tsv"
    corpus.write_text("".join(f"{s}\t{h or r}\n" for s, h, r in rows.iter_rows()))
    trace_run(model, corpus, root, "orig", decoding, vectors=False)
    with open_warehouse(root) as wh:
        orig = wh.sql(
            "SELECT sent_id, source, reference FROM sentences WHERE run_id = 'orig' ORDER BY sent_id"
        )
    examples, skips = variants(KINDS["case"], orig.to_dicts(), "dates")
    changed = [
        Example(
            r["sent_id"], r["source"].upper() if r["sent_id"] % 2 else r["source"], r["reference"], "x", 1
        )
        for r in orig.iter_rows(named=True)
    ]
    for name, exs, skipped, expect in (("case", examples, skips, "same"), ("change", changed, {}, "change")):
        origin = {"of": "orig", "kind": name, "expect": expect, "where": "all"}
        spec = f"perturb:{name}:orig"
        trace_run(
            model,
            spec,
            root,
            f"orig.{name}",
            decoding,
            vectors=False,
            examples=Corpus(spec, "test", exs),
            skips=skipped,
            perturbation=origin,
        )
    return root
