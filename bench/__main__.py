"""Run every benchmark: ``python -m bench`` (what ``make bench`` does)."""

from __future__ import annotations

import argparse

from bench import (
    ann,
    attribution_speed,
    bank,
    blame,
    hf_speed,
    load,
    long_inputs,
    perturb_speed,
    ray_speed,
    scale,
    storage,
    trace_speed,
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    trace_speed.main(args.device)
    attribution_speed.main(args.device)
    perturb_speed.main(args.device)
    ray_speed.main(args.device)
    storage.main(args.device)
    bank.main(args.device)
    blame.main(args.device)
    hf_speed.main(args.device)
    long_inputs.main()  # the CPU: memory of thousands-of-token sources
    scale.main(args.device)
    ann.main(args.device)
    load.main(args.device)  # people reading pages (2 s on average)
    load.main(args.device, think=0.0)  # and the stress test


if __name__ == "__main__":
    main()
