"""Built-in models (Transformer, LSTM) behind the adapter protocol, and their checkpoints.

A checkpoint directory holds ``config.json`` (format, arch, sizes, training record),
``model.safetensors`` and ``src_vocab.json`` / ``tgt_vocab.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pipeline.archs import LSTM, TRANSFORMER
from pipeline.models.lstm import LSTMConfig, LSTMSeq2Seq
from pipeline.models.protocol import Edit, Encoded, ForcedOutput, StepOutput
from pipeline.models.transformer import Transformer, TransformerConfig
from pipeline.vocab import BOS, EOS, PAD, UNK, Vocab
from schemas import CheckpointError

FORMAT = "beamscope-model"
ARCHS: dict[str, tuple[type, type[nn.Module]]] = {
    TRANSFORMER: (TransformerConfig, Transformer),
    LSTM: (LSTMConfig, LSTMSeq2Seq),
}
FILES = ("config.json", "model.safetensors", "src_vocab.json", "tgt_vocab.json")


def build_net(arch: str, src_vocab: int, tgt_vocab: int, **sizes: Any) -> nn.Module:
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; built-in: {', '.join(ARCHS)}")
    config_cls, net_cls = ARCHS[arch]
    return net_cls(config_cls(src_vocab=src_vocab, tgt_vocab=tgt_vocab, **sizes))


class BuiltinModel:
    """A built-in network with its vocabularies; implements ``Seq2SeqAdapter``."""

    bos_id, eos_id, pad_id, unk_id = BOS, EOS, PAD, UNK

    def __init__(
        self,
        name: str,
        arch: str,
        net: nn.Module,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.arch, self.net = name, arch, net
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.meta = meta or {}
        self.vocab_size, self.src_vocab_size = len(tgt_vocab), len(src_vocab)
        self.max_src_len: int | None = net.config.max_len
        self.path: Path | None = None
        self.hash = ""

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device) -> BuiltinModel:
        self.net.to(device)
        return self

    def src_ids(self, text: str) -> list[int]:
        return self.src_vocab.encode(text) + [EOS]

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [self.src_vocab.token(i) for i in ids]

    def tgt_ids(self, text: str) -> list[int]:
        return self.tgt_vocab.encode(text)

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self.tgt_vocab.token(i) for i in ids]

    def word_starts(self, pieces: list[str], side: str = "tgt") -> list[bool]:
        return (self.src_vocab if side == "src" else self.tgt_vocab).word_starts(pieces)

    def detokenize(self, ids: list[int]) -> str:
        return self.tgt_vocab.decode(ids)

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        return self.net.encode(src, mask, all_layers)

    def start(self, enc: Encoded, beam: int) -> Any:
        return self.net.start(enc, beam)

    def step(self, enc: Encoded, tokens: Tensor, cache: Any, edit: Edit | None = None) -> StepOutput:
        return self.net.step(enc, tokens, cache, edit)

    def reorder(self, cache: Any, rows: Tensor) -> Any:
        return self.net.reorder(cache, rows)

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        return self.net.forced(enc, tgt_in)

    def embeddings(self) -> tuple[nn.Module, nn.Module]:
        return self.net.src_emb, self.net.tgt_emb

    def output_embeddings(self) -> Tensor:
        return self.net.out.weight

    def logits(self, states: Tensor) -> Tensor:
        return self.net.out(states)  # both networks read their output state with ``out`` alone

    def adjust_logprobs(
        self, logprobs: Tensor, step: int, prefix: Tensor | None = None, max_len: int | None = None
    ) -> Tensor:
        logprobs[:, PAD] = float("-inf")
        logprobs[:, BOS] = float("-inf")
        return logprobs

    def save(self, out: Path) -> None:
        """Write the checkpoint directory atomically (a complete directory or none)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            config = {
                "format": FORMAT,
                "name": self.name,
                "arch": self.arch,
                "model": dataclasses.asdict(self.net.config),
                **self.meta,
            }
            (tmp / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
            state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            self.src_vocab.save(tmp / "src_vocab.json")
            self.tgt_vocab.save(tmp / "tgt_vocab.json")
            old = out.with_name(f".{out.name}.old")
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"not valid JSON ({e.msg if hasattr(e, 'msg') else e})", path=str(path)
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError("expected a JSON object", path=str(path))
    return data


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _state_mismatch(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str:
    """What differs between the tensors a network needs and those a file holds (short), or ''."""

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {few(missing)}")
    if unexpected:
        parts.append(f"not in the network {few(unexpected)}")
    if shapes:
        k = shapes[0]
        shape = f"{k} is {list(found[k].shape)} in the file, {list(expected[k].shape)} in the network"
        parts.append(f"other shapes: {shape}" + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    return "; ".join(parts)


def load_builtin(path: Path, device: torch.device) -> BuiltinModel:
    """Load a built-in checkpoint; any missing, corrupt or mismatched part is a CheckpointError."""
    for name in FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"incomplete checkpoint: {name} is missing", path=str(path))
    config = _read_json(path / "config.json")
    arch = config.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}", path=str(path / "config.json"))
    try:
        vocabs = [Vocab.from_json(_read_json(path / f)) for f in ("src_vocab.json", "tgt_vocab.json")]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"malformed vocabulary ({e})", path=str(path)) from None
    sizes = {k: v for k, v in config.get("model", {}).items() if k not in ("src_vocab", "tgt_vocab")}
    try:
        net = build_net(arch, len(vocabs[0]), len(vocabs[1]), **sizes)
    except TypeError as e:
        raise CheckpointError(
            f"config does not fit arch {arch!r}: {e}", path=str(path / "config.json")
        ) from None
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"unreadable weights ({e})", path=str(weights)) from None
    mismatch = _state_mismatch(net.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"weights do not match config.json (arch {arch!r}): {mismatch}", path=str(weights)
        )
    net.load_state_dict(state, strict=True)
    net.eval().to(device)
    meta = {k: v for k, v in config.items() if k not in ("format", "name", "arch", "model")}
    model = BuiltinModel(config.get("name", path.name), arch, net, vocabs[0], vocabs[1], meta)
    model.path, model.hash = path, file_hash(weights)
    return model
