"""Host-to-host copy bandwidth: ``torch`` ``copy_`` of a large CPU buffer into another one.

This is the constant ``docs/scale.md`` uses for every copy inside host memory (the
object-store snapshot store's extra copies). Each size is copied ``--repeats`` times into a
preallocated destination after one untimed warm-up copy; the median is printed in GB/s
(10^9 bytes per second, counting the bytes copied once, not read + write).

    .venv/bin/python benchmarks/bench_host_copy.py --mb 256 1024 --threads 1 2 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch


def copy_bandwidth(nbytes: int, threads: int, repeats: int) -> float:
    """Median GB/s of ``dst.copy_(src)`` for ``nbytes`` bytes with ``threads`` torch threads."""
    if nbytes <= 0:
        raise ValueError(f"nbytes={nbytes}: must be > 0")
    if threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be >= 1")
    torch.set_num_threads(threads)
    src = torch.rand(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: first-touch page faults of dst
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    assert torch.equal(dst, src)
    return src.nbytes / statistics.median(times) / 1e9


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mb", type=float, nargs="+", default=[256.0, 1024.0], help="sizes in MB")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    print(f"median of {args.repeats} copies; GB = 1e9 bytes")
    for mb in args.mb:
        for threads in args.threads:
            gbps = copy_bandwidth(int(mb * 1e6), threads, args.repeats)
            print(f"{mb:8.0f} MB  threads={threads}  {gbps:6.2f} GB/s")


if __name__ == "__main__":
    main()
