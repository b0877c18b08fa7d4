"""Arrow schemas of every warehouse table: the one definition writers and readers share.

Keys: every table has ``run_id``; the per-table keys are listed in ``KEYS``.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 7

_RUN = pa.field("run_id", pa.string(), nullable=False)
_SENT = pa.field("sent_id", pa.int64(), nullable=False)

RUNS = pa.schema(
    [
        _RUN,
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("status", pa.string(), nullable=False),  # 'running' | 'complete'
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_path", pa.string(), nullable=False),
        pa.field("model_hash", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("decoding", pa.string(), nullable=False),  # JSON of the resolved decoding config
        pa.field("options", pa.string(), nullable=False),  # JSON of every other resolved option
        pa.field("n_sentences", pa.int64(), nullable=False),
        pa.field("n_skipped", pa.int64(), nullable=False),
        pa.field("neighbours_run", pa.string()),  # training run whose states the blame rules used
        pa.field("exact_match", pa.float32()),  # corpus scores over sentences with a reference
        pa.field("bleu", pa.float32()),
        pa.field("chrf", pa.float32()),
        pa.field("ter", pa.float32()),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("beamscope_version", pa.string(), nullable=False),
    ]
)

SENTENCES = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reference", pa.string()),
        pa.field("hypothesis", pa.string(), nullable=False),
        pa.field("src_len", pa.int32(), nullable=False),
        pa.field("ref_len", pa.int32()),
        pa.field("hyp_len", pa.int32(), nullable=False),
        pa.field("hyp_logprob", pa.float32(), nullable=False),
        pa.field("hyp_score", pa.float32(), nullable=False),  # length-normalised, as ranked by the beam
        pa.field("ref_logprob", pa.float32()),
        pa.field("ref_score", pa.float32()),  # same normalisation as hyp_score
        pa.field("exact_match", pa.bool_()),
        pa.field("is_search_error", pa.bool_()),
        pa.field("first_divergence_step", pa.int32()),
        pa.field("bleu", pa.float32()),
        pa.field("chrf", pa.float32()),
        pa.field("ter", pa.float32()),
        pa.field("blamed_stage", pa.string()),  # null when correct or without reference
        pa.field("error_tags", pa.list_(pa.string())),
        pa.field("nn_encoder_agreement", pa.float32()),  # see pipeline/taxonomy.py
        pa.field("nn_decoder_agreement", pa.float32()),
        pa.field("nn_reference_agreement", pa.float32()),
        pa.field("nn_encoder_min_agreement", pa.float32()),  # lowest of any source token's state
        pa.field("nn_attention_agreement", pa.float32()),  # neighbours that read the token t* reads
        # the attention signals of the stage rule (``pipeline.taxonomy.Signals``), wrong sentences only
        pa.field("attn_entropy_at_divergence", pa.float32()),  # normalised by log(src_len)
        pa.field("attn_coverage_at_divergence", pa.float32()),
        pa.field("n_beam_nodes", pa.int32(), nullable=False),
    ]
)

# Neighbour agreement (null without a traced training run of the same model): the share of the
# k nearest training states (cosine, k = the run's taxonomy.neighbours) carrying the same token.
_NN = pa.field("nn_agreement", pa.float32())

SOURCE_TOKENS = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("src_pos", pa.int32(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("is_unknown", pa.bool_(), nullable=False),
        pa.field("is_word_start", pa.bool_(), nullable=False),
        pa.field("attention_received", pa.float32(), nullable=False),  # sum over hypothesis steps
        _NN,  # share of the k nearest training encoder states standing for the same source token
    ]
)

_TOPK = [  # their tokens: the ``topk`` view (through ``vocabulary``)
    pa.field("topk_token_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("topk_probs", pa.list_(pa.float16()), nullable=False),
]
_ATTN_SUMMARY = [
    pa.field("attn_argmax_src_pos", pa.int32(), nullable=False),
    pa.field("attn_entropy", pa.float32(), nullable=False),
    pa.field("attn_kept_mass", pa.float32()),  # of the mean row, when attention was pruned (top-k/p)
]

_WORD_START = pa.field("is_word_start", pa.bool_(), nullable=False)

TARGET_STEPS = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("step", pa.int32(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        _WORD_START,
        pa.field("prob", pa.float32(), nullable=False),
        pa.field("logprob", pa.float32(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        *_TOPK,
        *_ATTN_SUMMARY,
        _NN,  # share of the k nearest training decoder states followed by this step's token ...
        pa.field("nn_ref_agreement", pa.float32()),  # ... and by the reference's token at this step
    ]
)

REFERENCE_STEPS = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("step", pa.int32(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        _WORD_START,
        pa.field("prob", pa.float32(), nullable=False),
        pa.field("logprob", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1 = the model's top-1
        pa.field("top1_token", pa.string(), nullable=False),
        pa.field("top1_token_id", pa.int32(), nullable=False),
        pa.field("top1_prob", pa.float32(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        *_ATTN_SUMMARY,
        _NN,  # of the reference-forced decoder state, for the reference token
    ]
)

ATTENTION = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("decoding", pa.string(), nullable=False),  # 'hyp' | 'ref'
        pa.field("step", pa.int32(), nullable=False),
        pa.field("src_pos", pa.int32(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),  # -1 = mean over layers
        pa.field("head", pa.int16(), nullable=False),  # -1 = mean over heads
        pa.field("weight", pa.float16(), nullable=False),  # rows sum to 1 within 1e-3
    ]
)

BEAM_NODES = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("node_id", pa.int32(), nullable=False),
        pa.field("parent_id", pa.int32()),  # null for the root
        pa.field("step", pa.int32(), nullable=False),  # 0 = root (start token)
        pa.field("token", pa.string(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("token_logprob", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # cumulative log-probability
        pa.field("rank_in_beam", pa.int32(), nullable=False),  # rank among the step's candidates
        pa.field("status", pa.string(), nullable=False),  # 'kept' | 'pruned' | 'finished' | 'root'
        pa.field("on_best_path", pa.bool_(), nullable=False),
    ]
)

SKIPPED = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

# The model's tokens by id, once per run: what ids in the other tables stand for.
VOCABULARY = pa.schema(
    [
        _RUN,
        pa.field("side", pa.string(), nullable=False),  # 'src' | 'tgt'
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("token", pa.string()),  # null: an id no row of a migrated run showed
    ]
)

# Where in decoder-state space the model fails (``pipeline.clusters``, written when a run completes):
# k-means clusters of one decoder state per sentence with a reference (the wrong ones' state at the
# first divergence step, a seeded random step of the others), numbered by error rate (1 = highest).
STATE_CLUSTERS = pa.schema(
    [
        _RUN,
        pa.field("cluster", pa.int32(), nullable=False),  # rank: 1 = highest error rate
        pa.field("n_states", pa.int64(), nullable=False),  # one state per sentence
        pa.field("n_wrong", pa.int64(), nullable=False),  # of wrong sentences (state at divergence)
        pa.field("error_rate", pa.float32(), nullable=False),  # n_wrong / n_states
        pa.field("top_produced", pa.list_(pa.string()), nullable=False),  # most frequent first (<= 3)
        pa.field("top_reference", pa.list_(pa.string()), nullable=False),
        pa.field("example_sent_ids", pa.list_(pa.int64()), nullable=False),  # wrong ones first (<= 5)
    ]
)

STATE_CLUSTER_MEMBERS = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("step", pa.int32(), nullable=False),  # the clustered state's target step
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("is_wrong", pa.bool_(), nullable=False),  # a wrong sentence: step = its divergence
        pa.field("produced", pa.string(), nullable=False),  # the hypothesis' token at the step
        pa.field("reference", pa.string(), nullable=False),  # the reference's token at the step
    ]
)

# Gradient attribution (``pipeline.attribution``: ``beamscope attribute`` or ``trace --attribution``):
# how much each source token and each earlier target token moved the log-probability of each produced
# token. ``score`` is captum's attribution summed over the embedding dimension; for integrated
# gradients the baseline is the PAD token's embedding at every position (``attribution_steps``
# holds the log-probability there), so the scores of a step sum to logprob - baseline_logprob + delta.
ATTRIBUTION = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("step", pa.int32(), nullable=False),  # the produced token's hypothesis step
        pa.field("side", pa.string(), nullable=False),  # 'src' | 'tgt'
        # src: the source position; tgt: the decoder input position (0 = start token, p = step p - 1)
        pa.field("position", pa.int32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)

ATTRIBUTION_METHODS = ("ig", "grad_x_input", "saliency")  # integrated gradients, grad x input, |grad|

ATTRIBUTION_STEPS = pa.schema(
    [
        _RUN,
        _SENT,
        pa.field("step", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),  # ig | grad_x_input | saliency
        pa.field("ig_steps", pa.int32()),  # integration steps (ig only)
        pa.field("logprob", pa.float32(), nullable=False),  # of the produced token (model's own)
        pa.field("baseline_logprob", pa.float32()),  # at the PAD baseline (ig only)
        pa.field("delta", pa.float32()),  # captum's convergence delta (ig only)
    ]
)

# Close words (Seq2Seq-Vis): the k nearest tokens (cosine) of each token a run shows, in the model's
# input embedding space (side 'src') or its output layer's token vectors (side 'tgt'); written when
# a trace completes. Runs migrated from schema 4 and what-if runs have none.
WORD_NEIGHBOURS = pa.schema(
    [
        _RUN,
        pa.field("side", pa.string(), nullable=False),  # 'src' | 'tgt'
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),  # 1 = nearest
        pa.field("neighbour_id", pa.int32(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),  # cosine
    ]
)

# The blame benchmark of a run (``beamscope calibrate``): faults of known stage planted in its
# sentences, the stage each was blamed on, under the thresholds the run recorded and under those
# chosen on the 'fit' half of the faults (measured on the 'held_out' half). Confusion counts; the
# precision and recall of each stage are queries over them (``warehouse.blame``).
BLAME_CALIBRATION = pa.schema(
    [
        _RUN,  # the run the faults were planted in
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_hash", pa.string(), nullable=False),
        pa.field("faults_per_stage", pa.int64(), nullable=False),  # the planting: runs RUN.fault-*
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("taxonomy", pa.string(), nullable=False),  # 'recorded' | 'calibrated'
        pa.field("thresholds", pa.string(), nullable=False),  # JSON: pipeline.taxonomy.Taxonomy
        pa.field("half", pa.string(), nullable=False),  # 'fit' | 'held_out'
        pa.field("planted", pa.string(), nullable=False),
        pa.field("blamed", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "runs": RUNS,
    "vocabulary": VOCABULARY,
    "sentences": SENTENCES,
    "source_tokens": SOURCE_TOKENS,
    "target_steps": TARGET_STEPS,
    "reference_steps": REFERENCE_STEPS,
    "attention": ATTENTION,
    "beam_nodes": BEAM_NODES,
    "skipped": SKIPPED,
    "state_clusters": STATE_CLUSTERS,
    "state_cluster_members": STATE_CLUSTER_MEMBERS,
    "attribution": ATTRIBUTION,
    "attribution_steps": ATTRIBUTION_STEPS,
    "word_neighbours": WORD_NEIGHBOURS,
    "blame_calibration": BLAME_CALIBRATION,
}

KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "vocabulary": ("run_id", "side", "token_id"),
    "sentences": ("run_id", "sent_id"),
    "source_tokens": ("run_id", "sent_id", "src_pos"),
    "target_steps": ("run_id", "sent_id", "step"),
    "reference_steps": ("run_id", "sent_id", "step"),
    "attention": ("run_id", "sent_id", "decoding", "step", "src_pos", "layer", "head"),
    "beam_nodes": ("run_id", "sent_id", "node_id"),
    "skipped": ("run_id", "sent_id"),
    "state_clusters": ("run_id", "cluster"),
    "state_cluster_members": ("run_id", "sent_id", "step"),
    "attribution": ("run_id", "sent_id", "step", "side", "position"),
    "attribution_steps": ("run_id", "sent_id", "step"),
    "word_neighbours": ("run_id", "side", "token_id", "rank"),
    "blame_calibration": ("run_id", "taxonomy", "half", "planted", "blamed"),
}

# The tables written once per run (one part); the others get one part per chunk of the corpus.
RUN_TABLES: tuple[str, ...] = (
    "runs",
    "vocabulary",
    "state_clusters",
    "state_cluster_members",
    "word_neighbours",
)
# Tables a complete run may lack: attribution is computed when asked for (and then for the parts
# asked); word neighbours need the model, which runs migrated from schema 4 and what-if runs lack;
# a blame calibration is made when asked for.
OPTIONAL_TABLES: tuple[str, ...] = (
    "attribution",
    "attribution_steps",
    "word_neighbours",
    "blame_calibration",
)
ATTRIBUTION_TABLES: tuple[str, ...] = ("attribution", "attribution_steps")
# The tables every part of a trace writes.
PART_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t not in RUN_TABLES and t not in OPTIONAL_TABLES)
VECTOR_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def encoder_states_schema(dim: int, dtype: str = "float16") -> pa.Schema:
    """LanceDB table of encoder states: one vector per source token (and layer)."""
    return pa.schema(
        [
            _RUN,
            _SENT,
            pa.field("src_pos", pa.int32(), nullable=False),
            pa.field("layer", pa.int16(), nullable=False),
            pa.field("token", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("vector", pa.list_(VECTOR_DTYPES[dtype], dim), nullable=False),
        ]
    )


def decoder_states_schema(dim: int, dtype: str = "float16") -> pa.Schema:
    """LanceDB table of decoder states: one vector per target step of 'hyp' and 'ref' decoding.

    At ``step`` the decoder has read ``token`` (the start token at step 0) and predicts
    ``next_token`` (the hypothesis' token for 'hyp', the reference's for 'ref'). Up to its first
    divergence step the hypothesis has read the reference's prefix, so its states there are the
    'ref' rows': stored once, there are 'hyp' rows only from the step after the divergence on
    (``warehouse.states.hyp_states`` reads the hypothesis' states back whole).
    """
    return pa.schema(
        [
            _RUN,
            _SENT,
            pa.field("decoding", pa.string(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("token", pa.string(), nullable=False),
            pa.field("next_token", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("vector", pa.list_(VECTOR_DTYPES[dtype], dim), nullable=False),
        ]
    )


VECTOR_TABLES = ("encoder_states", "decoder_states")
