"""Training of the built-in models on a built-in task (CPU-friendly, time-boxed)."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from pipeline.batching import pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.models.builtin import ARCHS, BuiltinModel, build_net
from pipeline.tasks import generate, get_task
from pipeline.threads import torch_threads
from pipeline.vocab import BOS, EOS, PAD, Vocab
from schemas import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``beamscope train`` (stored in the checkpoint's config.json)."""

    task: str = "dates"
    arch: str = "transformer"
    seed: int = 0
    n_train: int = 60_000
    n_valid: int = 1_000
    minutes: float = 5.0
    max_steps: int = 2_000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    label_smoothing: float = 0.05
    d_model: int = 128
    layers: int = 2
    heads: int = 4

    def sizes(self) -> dict[str, int]:
        if self.arch == "transformer":
            return {
                "d_model": self.d_model,
                "n_heads": self.heads,
                "n_enc_layers": self.layers,
                "n_dec_layers": self.layers,
                "d_ff": 2 * self.d_model,
            }
        return {"d_model": self.d_model}


def train(
    cfg: TrainConfig, out: Path, device: torch.device, progress: bool = True
) -> tuple[BuiltinModel, float]:
    """Train, save the checkpoint to ``out`` and return (model, validation exact match).

    With ``default_threads()`` torch threads: with torch's default (every core) beside another busy
    process, the demo's numbers LSTM made 1.3 steps/s instead of 35 and ran out of its budget."""
    with torch_threads(None):
        return _train(cfg, out, device, progress)


def _train(cfg: TrainConfig, out: Path, device: torch.device, progress: bool) -> tuple[BuiltinModel, float]:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown --arch {cfg.arch!r}; built-in: {', '.join(ARCHS)}")
    if cfg.max_steps < 1 or cfg.minutes <= 0 or cfg.batch_size < 1:
        raise ConfigError("--steps, --minutes and --batch-size must be positive")
    task = get_task(cfg.task)
    torch.manual_seed(cfg.seed)
    pairs = generate(task, "train", cfg.n_train, cfg.seed)
    valid = generate(task, "valid", cfg.n_valid, cfg.seed)
    src_vocab = Vocab.build((s for s, _ in pairs), task.src_mode)
    tgt_vocab = Vocab.build((t for _, t in pairs), task.tgt_mode, task.tgt_pieces)
    net = build_net(cfg.arch, len(src_vocab), len(tgt_vocab), **cfg.sizes()).to(device)
    meta = {"task": cfg.task, "train": dataclasses.asdict(cfg)}
    model = BuiltinModel(f"{cfg.task}-{cfg.arch}", cfg.arch, net, src_vocab, tgt_vocab, meta)
    data = [(model.src_ids(s), model.tgt_ids(t)) for s, t in pairs]

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, budget = time.monotonic(), cfg.minutes * 60

    def lr_factor(step: int) -> float:
        """Warm up, then decay linearly with progress (of steps or of time, whichever is ahead)."""
        progress = max(step / cfg.max_steps, (time.monotonic() - start) / budget)
        return min((step + 1) / cfg.warmup, max(0.05, 1 - progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=cfg.label_smoothing)
    rng = random.Random(cfg.seed)
    net.train()
    bar = tqdm(total=cfg.max_steps, desc=f"train {model.name}", unit="step", disable=not progress)
    for _ in range(cfg.max_steps):
        batch = rng.sample(data, min(cfg.batch_size, len(data)))
        src, mask = pad([s for s, _ in batch], PAD, device)
        tgt_in, _ = pad([[BOS, *t] for _, t in batch], PAD, device)
        tgt_out, _ = pad([[*t, EOS] for _, t in batch], PAD, device)
        logits = net.forced(net.encode(src, mask), tgt_in).logits
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if time.monotonic() - start > budget:
            break
    bar.close()
    net.eval()
    accuracy = exact_match(model, valid, device)
    model.meta["valid_exact_match"] = accuracy
    model.save(out)
    return model, accuracy


@torch.inference_mode()
def exact_match(model: BuiltinModel, pairs: list[tuple[str, str]], device: torch.device) -> float:
    """Share of ``pairs`` whose greedy (beam 1) output equals the reference."""
    cfg = DecodeConfig(beam=1, max_len=64)
    hits = 0
    for i in range(0, len(pairs), 256):
        chunk = pairs[i : i + 256]
        src, mask = pad([model.src_ids(s) for s, _ in chunk], PAD, device)
        out = beam_search(model, model.encode(src, mask), cfg, trace=False)
        hits += sum(model.detokenize(d.ids) == t for d, (_, t) in zip(out, chunk, strict=True))
    return hits / max(1, len(pairs))
