"""Arguments shared by several verbs, each beside the function that turns it into a value."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from schemas import ConfigError

if TYPE_CHECKING:
    from pipeline.beam import DecodeConfig
    from pipeline.ray_engine import RayEngine

Subparsers = argparse._SubParsersAction  # what ``add_subparsers`` returns


def add_verb(sub: Subparsers, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A sub-parser for verb ``name``: ``help`` as its description, ``examples`` as its epilog."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")


def add_bank_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bank-size",
        type=int,
        default=None,
        help="keep at most N states per kind in a training run's neighbour bank (seeded uniform sample; "
        "default: all)",
    )


def add_engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (see README: Scale-out on Ray)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: decode in this process; ray: in an actor pool of model replicas on a Ray cluster",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto (the running one) or HOST:PORT (default: start one here)",
    )
    g.add_argument("--workers", type=int, default=1, help="model replicas (Ray actors)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker holds")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker holds")


def engine(a: argparse.Namespace) -> RayEngine | None:
    """The ``RayEngine`` asked for by ``add_engine``'s options, or None for ``--engine local``."""
    from pipeline.ray_engine import RayEngine

    if a.engine == "local":
        ray_only = {
            "--address": a.address,
            "--workers": a.workers != 1,
            "--gpus-per-worker": a.gpus_per_worker,
            "--cpus-per-worker": a.cpus_per_worker != 1.0,
        }
        given = [k for k, v in ray_only.items() if v]
        if given:
            raise ConfigError(f"{', '.join(given)} need --engine ray")
        return None
    return RayEngine(a.address, a.workers, a.gpus_per_worker, a.cpus_per_worker)  # checked by trace


def add_decoding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=5, help="beam width (1 = greedy)")
    p.add_argument("--topk", type=int, default=10, help="top-k predictions recorded per step")
    p.add_argument("--max-len", type=int, default=64, help="most target tokens per sentence")
    p.add_argument("--length-penalty", type=float, default=1.0, help="score = logprob / length**penalty")
    p.add_argument("--per-head", action="store_true", help="store attention per layer and head too")
    p.add_argument("--all-layers", action="store_true", help="store encoder states of every layer")
    p.add_argument(
        "--src-lang",
        help="multilingual models: the source language code, as the tokenizer spells it "
        "(NLLB eng_Latn, mBART-50 en_XX, M2M100 en); default: the tokenizer's",
    )
    p.add_argument(
        "--tgt-lang",
        help="multilingual models: the target language code (NLLB/M2M100/mBART-50: the "
        "forced first token; mBART-25: the decoder's start token); default: the generation config's",
    )


def decoding(a: argparse.Namespace) -> DecodeConfig:
    """The ``DecodeConfig`` of ``add_decoding``'s options."""
    from pipeline.beam import DecodeConfig

    return DecodeConfig(
        beam=a.beam,
        topk=a.topk,
        max_len=a.max_len,
        length_penalty=a.length_penalty,
        per_head=a.per_head,
        all_layers=a.all_layers,
        src_lang=a.src_lang,
        tgt_lang=a.tgt_lang,
    )
