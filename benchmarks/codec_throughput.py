"""Encode+decode throughput of every codec stage and of the Caldas et al. chains.

Prints million floats per second (d / (encode + decode time), best of a few runs) for d = 1e4 .. 1e7, the
payload compression ratio versus float32 at 1e6, the one-core targets (every stage > 100 M floats/s at
1e6 except Kashin > 20 M floats/s), and how the Hadamard transform's time grows with size (d log d).

    python benchmarks/codec_throughput.py                  # one CPU core
    python benchmarks/codec_throughput.py --threads 0      # all cores
    python benchmarks/codec_throughput.py --device cuda

On Linux with glibc, every CPU buffer above 32 MiB is a fresh mmap whose pages fault in on first touch, which
dominates the 1e7 column; ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296`` (or jemalloc) removes it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from lightning_fl.codecs import (
    BFloat16,
    Chain,
    Codec,
    ErrorFeedback,
    Float16,
    Identity,
    Kashin,
    MagnitudePrune,
    RandomHadamard,
    SignCompressor,
    StochasticQuantizer,
    Subsample,
    TopK,
    fwht,
    next_power_of_two,
)

CODECS: dict[str, Callable[[], Codec]] = {
    "Identity": Identity,
    "Float16": Float16,
    "BFloat16": BFloat16,
    "RandomHadamard": RandomHadamard,
    "Kashin": Kashin,
    "Subsample(0.25)": lambda: Subsample(0.25),
    "StochasticQuantizer(2)": lambda: StochasticQuantizer(bits=2),
    "StochasticQuantizer(4)": lambda: StochasticQuantizer(bits=4),
    "StochasticQuantizer(8)": lambda: StochasticQuantizer(bits=8),
    "TopK(0.01)": lambda: TopK(0.01),
    "MagnitudePrune(0.01)": lambda: MagnitudePrune(0.01),
    "SignCompressor": SignCompressor,
    "ErrorFeedback(TopK(0.01))": lambda: ErrorFeedback(TopK(0.01)),
    "Kashin > SQ(4) (down)": lambda: Chain(Kashin(), StochasticQuantizer(bits=4)),
    "Hadamard > Sub(.25) > SQ(2) (up)": lambda: Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2)),
}
TARGET_MFLOATS = {"Kashin": 20.0}  # every other stage: 100
CHAINS_AND_WRAPPERS = ("Identity", "ErrorFeedback", "(down)", "(up)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _repeats(numel: int) -> int:
    return 3 if numel >= 10**7 else 7


def throughput_table(sizes: list[int], device: torch.device) -> None:
    print(f"encode+decode throughput, M floats/s ({device}, {torch.get_num_threads()} thread(s))")
    header = f"{'codec':34s}" + "".join(f"{f'd=1e{round(math.log10(d))}':>10s}" for d in sizes)
    print(header + f"{'ratio@1e6':>11s}{'target':>9s}")
    inputs = {d: torch.randn(d, device=device) for d in sizes}
    for label, factory in CODECS.items():
        row, ratio, at_million = "", float("nan"), None
        for d, x in inputs.items():
            codec = factory()  # fresh per size: ErrorFeedback keys its residual by stream

            def round_trip(codec: Codec = codec, x: torch.Tensor = x) -> None:
                codec.decode(codec.encode(x, seed=1, key="client0/w"))

            mfloats = d / best_seconds(round_trip, device, _repeats(d)) / 1e6
            row += f"{mfloats:10.1f}"
            if d == 10**6:
                ratio, at_million = 4 * d / codec.encode(x, seed=1, key="client0/w").nbytes, mfloats
        target = TARGET_MFLOATS.get(label, 100.0)
        verdict = ""
        if at_million is not None and not any(tag in label for tag in CHAINS_AND_WRAPPERS):
            verdict = f"{'>' if at_million > target else 'MISS <'}{target:.0f}"
        print(f"{label:34s}{row}{ratio:10.1f}x{verdict:>9s}")


def hadamard_growth(sizes: list[int], device: torch.device) -> None:
    print("\nHadamard time growth: t(d) / t(d/10), against n log n of the padded length n")
    print(
        f"{'d':>10s}{'n':>10s}{'fwht ms':>10s}{'stage ms':>10s}{'fwht ratio':>12s}{'stage ratio':>12s}{'n log n':>10s}"
    )
    previous = None
    for d in sizes:
        n = next_power_of_two(d)
        x, padded, codec = torch.randn(d, device=device), torch.randn(n, device=device), RandomHadamard()
        t_fwht = best_seconds(lambda padded=padded: fwht(padded), device, _repeats(d))
        t_stage = best_seconds(lambda x=x, codec=codec: codec.decode(codec.encode(x, 1)), device, _repeats(d))
        cells = ["", "", ""]
        if previous is not None:
            pn, pf, ps = previous
            cells = [f"{t_fwht / pf:.1f}", f"{t_stage / ps:.1f}", f"{n * math.log2(n) / (pn * math.log2(pn)):.1f}"]
        print(f"{d:>10d}{n:>10d}{t_fwht * 1e3:10.2f}{t_stage * 1e3:10.2f}{cells[0]:>12s}{cells[1]:>12s}{cells[2]:>10s}")
        previous = (n, t_fwht, t_stage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6, 10**7])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    throughput_table(args.sizes, device)
    hadamard_growth(args.sizes, device)


if __name__ == "__main__":
    main()
