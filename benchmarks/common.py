"""What every benchmark here shares: paired timing with robust statistics, the machine's limits
measured in the same run, and the run's description (machine, versions, load).

The benchmarks are scripts (`python benchmarks/bench_*.py`), so Python puts this folder on the path
and they import this module as `common`.
"""
from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import statistics
import time
import traceback

import torch

# --- timing -----------------------------------------------------------------------------------------

def finish(report: dict, out: str | None, failures: list[str], label: str = "FAILURE") -> dict:
    """The end of a benchmark: write the report as JSON to `out` (if given), print each failure."""
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {out}")
    for failure in failures:
        print(f"{label}: {failure}")
    return report


def summary(times: list[float]) -> dict:
    med = statistics.median(times)
    return {"median": med, "min": min(times), "max": max(times),
            "mad": statistics.median(abs(t - med) for t in times), "n": len(times), "all": times}


def paired(ours, theirs, repeats: int, warmup: int, settle: bool = False) -> dict:
    """Time two callables alternately: ours first on even repeats, theirs first on odd ones.

    settle: run each callable once, untimed, right before each of its timed calls, so that it is timed
    in the state its own previous call left rather than the other one's. Needed where the two allocate
    differently: right after a BERT-base training step of one library, the other's step page-faults
    up to 5x more (memory the allocator gave back to the system) and takes up to 1 s longer.
    """
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_theirs = [], []
    for r in range(repeats):
        order = [(ours, t_ours), (theirs, t_theirs)]
        for fn, sink in (order if r % 2 == 0 else order[::-1]):
            if settle:
                fn()
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(t_ours, t_theirs)]
    # ratio_best: best repeat against best repeat. Noise on a shared machine only ever adds time (and
    # here it often adds whole seconds to a training step), so this one is the least disturbed by it.
    return {"ours": summary(t_ours), "transformers": summary(t_theirs),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_best": min(t_theirs) / min(t_ours)}


def interleaved(fns: dict, repeats: int, warmup: int, settle: bool = False) -> dict:
    """Time several callables in turn, the first ("ours") against each of the others.

    The order rotates every repeat and runs backwards every other round of rotations, so that no
    contender always follows the same one. `settle` as in `paired`. Returns, per name, the summary of
    its times and, for every name but the first, its ratio to the first: the median of the per-repeat
    ratios (their time / ours, > 1: ours is faster), min, max and best repeat / best repeat.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        order = names[k:] + names[:k]
        for name in (order if (r // len(names)) % 2 == 0 else order[::-1]):
            if settle:
                fns[name]()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    ours = names[0]
    result = {"times": {name: summary(t) for name, t in times.items()}, "ratios": {}}
    for name in names[1:]:
        ratios = [b / a for a, b in zip(times[ours], times[name])]
        result["ratios"][name] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                  "ratio_max": max(ratios), "ratio_best": min(times[name]) / min(times[ours])}
    return result


class Worker:
    """A contender in a process of its own: `factory(*args)` builds, in that process, the callable that
    each call of the worker runs there (its return value comes back).

    Why: timed in one process, libraries disturb each other through the memory allocator. GPT-2 124M
    training step, fp32, 2 threads: alone in its process, our backward pass took 2.71-2.78 s and
    nanoGPT's 2.77-2.78 s; with three models stepping in turn in one process, 3.1-3.4 s and 2.9-3.1 s
    (medians of three runs): which buffers come back from the heap and which are mapped and
    page-faulted afresh depends on what the other library freed. A user trains one model per process.
    The factory must be a module-level function (the process is spawned and imports it by name).
    """

    def __init__(self, factory, *args):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, factory, args), daemon=True)
        self._process.start()
        child.close()
        self._receive()                                   # built, or the error that stopped it

    def __call__(self, *args):
        self._conn.send(args)
        return self._receive()

    def _receive(self):
        status, value = self._conn.recv()
        if status == "error":
            self.close()
            raise RuntimeError(f"benchmark worker failed:\n{value}")
        return value

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(timeout=30)
        self._conn.close()


def _serve(conn, factory, args) -> None:
    try:
        fn = factory(*args)
        conn.send(("ready", None))
        while (call := conn.recv()) is not None:
            conn.send(("ok", fn(*call)))
    except BaseException:                                 # report it to the parent rather than die silently
        conn.send(("error", traceback.format_exc()))


def others_cpu_use(seconds: float = 1.0) -> float | None:
    """Fraction of all cores busy over `seconds` while this process sleeps: the load other processes put
    on the machine (Linux /proc/stat; None elsewhere)."""
    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)          # idle + iowait, total
    try:
        idle0, total0 = read()
        time.sleep(seconds)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def best_of(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --- the machine's limits -----------------------------------------------------------------------------

def measure_limits(quick: bool, bandwidth: bool = True) -> dict:
    """Memory bandwidth (unless bandwidth=False) and matmul FLOP/s, with the same torch build and thread
    count as the models."""
    n = 3 if quick else 5
    limits = {}
    if bandwidth:
        limits.update(_stream_bandwidth(n))
        limits.update(_gemv_bandwidth(n))
        limits["memory_GBps"] = max(limits["copy_GBps"], limits["read_GBps"], limits["gemv_fp32_GBps"])
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        limits[f"matmul_{name}_GFLOPs"] = matmul_flops(dtype, n + 2)
    return limits


def best_limits(start: dict, end: dict) -> dict:
    """A shared machine can be slow at either end of a run, so each limit is the best of the two."""
    return {k: max(start[k], end[k]) for k in start}


def _stream_bandwidth(n: int) -> dict:
    """Streams far larger than any cache (this VM reports a 480 MiB L3): 1 GiB each."""
    a = torch.ones(256 * 2**20)                                      # 1 GiB fp32
    b = torch.empty_like(a)
    copy_s = best_of(lambda: b.copy_(a), n)
    read_s = best_of(lambda: a.sum(), n)
    return {"copy_GBps": 2 * a.numel() * 4 / copy_s / 1e9,          # bytes read + bytes written
            "read_GBps": a.numel() * 4 / read_s / 1e9}


def _gemv_bandwidth(n: int) -> dict:
    """A matrix-vector product over a 1 GiB fp32 matrix (and its bf16 copy): how fast weights stream."""
    W = torch.randn(16384, 16384)                                    # 1 GiB fp32, (out, in)
    x = torch.randn(1, 16384)
    fp32_s = best_of(lambda: torch.nn.functional.linear(x, W), n)
    Wb, xb = W.bfloat16(), x.bfloat16()
    bf16_s = best_of(lambda: torch.nn.functional.linear(xb, Wb), n)
    return {"gemv_fp32_GBps": W.numel() * 4 / fp32_s / 1e9, "gemv_bf16_GBps": Wb.numel() * 2 / bf16_s / 1e9}


def matmul_flops(dtype: torch.dtype, n: int, m: int = 2048, k: int = 2048, p: int = 2048) -> float:
    """GFLOP/s of an (m, k) @ (k, p) product; 2048^3 by default, the size of a large training GEMM."""
    A = torch.randn(m, k).to(dtype)
    B = torch.randn(k, p).to(dtype)
    return 2 * m * k * p / best_of(lambda: A @ B, n) / 1e9


# --- the run's description -----------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_info(**settings) -> dict:
    """Date, machine, versions and the load other processes put on it now; prints a one-line header
    (and a warning when the machine is busy). `settings`: the benchmark's own, stored alongside."""
    import transformers
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "others_cpu_use_start": others_cpu_use(), "load_average_start": os.getloadavg(),
        **settings,
    }
    busy = info["others_cpu_use_start"]
    print(f"transformerkit vs transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{info['cpu']}, {torch.get_num_threads()} threads; other processes use "
          f"{'?' if busy is None else f'{busy:.0%}'} of the CPU")
    if busy is not None and busy > 0.1:
        print("note: other processes are using the cores, so absolute times are slow and noisy; the "
              "interleaved ratios are the numbers to read (or run again on an idle machine)")
    return info


def finish_info(info: dict, started: float) -> None:
    """The load at the end of the run and its wall time, added to `info`."""
    info["load_average_end"] = os.getloadavg()
    info["others_cpu_use_end"] = others_cpu_use()
    info["wall_s"] = time.time() - started


def load_line(info: dict) -> str:
    """One line: wall time and how busy the machine was before and after (from `finish_info`)."""
    def pct(x):
        return "?" if x is None else f"{x:.0%}"
    return (f"wall time {info['wall_s']:.0f} s; CPU used by other processes: {pct(info['others_cpu_use_start'])} "
            f"before, {pct(info['others_cpu_use_end'])} after; load average {info['load_average_start'][0]:.2f} -> "
            f"{info['load_average_end'][0]:.2f}")


# --- reporting -----------------------------------------------------------------------------------------

def fmt_time(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 10 else f"{s:.1f} s"


def ratio_text(r: dict) -> str:
    """A paired result's ratio with its spread: "1.27 (1.20-1.31; best/best 1.28)"."""
    return f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}; best/best {r['ratio_best']:.2f})"
