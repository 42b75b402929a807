"""What checking an untrusted payload costs next to decoding it, for the main codecs on a 1M-element tensor.

For each codec: the payload's size, the time of ``codec.decode``, the time of ``codec.check_payload_for`` (the
pre-decode check against the expected shape and dtype) and its share of the decode, and the time of
:func:`~lightning_fl.codecs.untrusted.decode_untrusted` on the serialized bytes (budget check, copy of the bytes
into a tensor, check, decode, shape check). Best of a few runs, one CPU thread by default.

    python benchmarks/untrusted_decode.py
    python benchmarks/untrusted_decode.py --numel 100000 --threads 0
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from codec_throughput import CODECS  # the same codecs as the throughput benchmark (this script's folder)

from lightning_fl.codecs import ErrorFeedback
from lightning_fl.codecs.untrusted import decode_untrusted


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def table(numel: int, repeats: int) -> None:
    """Print one row per codec: payload bytes, decode, check, check / decode, decode_untrusted."""
    x = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    shape, dtype = tuple(x.shape), x.dtype
    print(f"untrusted decode, d={numel:,} float32, {torch.get_num_threads()} thread(s), best of {repeats}")
    print(f"{'codec':30s}{'payload B':>12s}{'decode ms':>11s}{'check us':>10s}{'check/dec':>11s}{'untrusted ms':>14s}")
    for label, factory in CODECS.items():
        codec = factory()
        payload = codec.encode(x, seed=1, key="client0/w")
        data = payload.to_bytes()
        receiver = codec.codec if isinstance(codec, ErrorFeedback) else codec  # decode without the sender's cache
        t_decode = best_seconds(lambda receiver=receiver, payload=payload: receiver.decode(payload), repeats)
        t_check = best_seconds(
            lambda receiver=receiver, payload=payload: receiver.check_payload_for(payload, shape, dtype), 10 * repeats
        )
        t_untrusted = best_seconds(
            lambda receiver=receiver, data=data: decode_untrusted(receiver, data, shape, dtype, len(data)), repeats
        )
        share = 100.0 * t_check / t_decode
        print(
            f"{label:30s}{len(data):12,d}{t_decode * 1e3:11.3f}{t_check * 1e6:10.1f}{share:10.2f}%"
            f"{t_untrusted * 1e3:14.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=10**6, help="elements of the tensor")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (best is kept)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table(args.numel, args.repeats)


if __name__ == "__main__":
    main()
