#!/usr/bin/env python3
"""edgevit's device-side latency profiler: times a model file with onnxruntime, OpenVINO or torch and writes JSON.

Shipped to the device by ``edgevit profile --remote``; it needs only Python 3.8+, numpy and the runtime itself —
NOT edgevit, so a Jetson's JetPack torch or onnxruntime stays untouched. It measures the same way as edgevit's local
profiler (edgevit/profiling/latency.py): per batch size, a time-based warm-up with a minimum count, then
``time.perf_counter_ns`` around each call to the runtime for a duration (at least ``--min-runs``, at most
``--max-runs``) or a fixed number of ``--runs``. The raw per-call times go back to the host, which computes the
statistics with the same function as a local profile. The Unix times of each timed window are recorded so that
tegrastats samples can be matched to it.

    python3 edgevit_device_profile.py --model model.onnx --runtime onnxruntime --inputs inputs.npy \
        --batch 1,8 --duration 3 --out result.json

Exit codes: 0 done; 3 the runtime is not installed (the message names what to install); 2 bad arguments or a
model the runtime cannot load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import socket
import sys
import time

RUNTIMES = ("onnxruntime", "openvino", "torch")
INSTALL_HINTS = {
    "onnxruntime": "pip3 install onnxruntime (on a Jetson: the onnxruntime-gpu wheel for its JetPack from "
                   "https://pypi.jetson-ai-lab.io or the Jetson Zoo)",
    "openvino": "pip3 install openvino",
    "torch": "on a Jetson: NVIDIA's torch wheel for its JetPack (PyTorch for Jetson); elsewhere: pip3 install torch",
    "numpy": "pip3 install numpy",
}


def fail(code: int, message: str) -> None:
    sys.stderr.write("edgevit-device: " + message + "\n")
    sys.exit(code)


def import_or_fail(name: str):
    try:
        return __import__(name)
    except Exception as exc:  # noqa: BLE001 - a broken install must read as "not installed", with the cause
        fail(3, f"MISSING-RUNTIME {name}: this device has no working '{name}' for {sys.executable} "
                f"({type(exc).__name__}: {exc}). Install it with: {INSTALL_HINTS.get(name, 'pip3 install ' + name)}")


def load(runtime: str, model: str, threads: int | None, device: str):
    """(run(x) -> outputs, info dict) for the model file."""
    if runtime == "onnxruntime":
        ort = import_or_fail("onnxruntime")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        sess = ort.InferenceSession(model, so, providers=providers)
        name = sess.get_inputs()[0].name
        return (lambda x: sess.run(None, {name: x})), {
            "runtime": "onnxruntime", "version": ort.__version__, "providers": sess.get_providers(),
            "threads": threads, "device": device}
    if runtime == "openvino":
        ov = import_or_fail("openvino")
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        target = "GPU" if device == "gpu" else "CPU"
        compiled = core.compile_model(model, target, config)
        request = compiled.create_infer_request()
        precision = None
        try:
            precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception as exc:  # noqa: BLE001 - older OpenVINO: not queryable
            precision = f"unknown ({type(exc).__name__})"
        return (lambda x: request.infer({0: x})), {
            "runtime": "openvino", "version": ov.__version__ if hasattr(ov, "__version__") else ov.get_version(),
            "device": target, "threads": threads, "inference_precision": precision}
    if runtime == "torch":
        torch = import_or_fail("torch")
        if threads:
            torch.set_num_threads(threads)
        dev = "cuda" if device == "cuda" else "cpu"
        if model.endswith(".pt2"):  # a torch.export archive, captured in eval mode (its module refuses .eval())
            module = torch.export.load(model).module().to(dev)
        else:  # TorchScript
            module = torch.jit.load(model, map_location=dev).eval()
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def run(x):
            with torch.inference_mode():
                y = module(torch.from_numpy(x).to(dev))
            sync()
            return y

        return run, {"runtime": "torch", "version": torch.__version__, "device": dev,
                     "threads": torch.get_num_threads()}
    fail(2, f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def batch_of(np, inputs, batch: int):
    n = inputs.shape[0]
    x = inputs[:batch] if n >= batch else np.take(inputs, np.arange(batch) % n, axis=0)
    return np.ascontiguousarray(x)


def measure(run, x, runs, duration_s, min_runs, max_runs):
    clock = time.perf_counter_ns
    cap = runs if runs else max_runs
    times = []
    deadline = clock() + int(duration_s * 1e9)
    while len(times) < cap:
        t0 = clock()
        run(x)
        t1 = clock()
        times.append(t1 - t0)
        if not runs and len(times) >= min_runs and t1 >= deadline:
            break
    return times


def _read(path: str):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def raw_snapshot() -> dict:
    """The machine's state now, as raw text, for the host to judge the timed window's stability with edgevit's own
    rules (edgevit/profiling/stability.py reads the same files locally): load average, /proc/stat, CPU pressure,
    this process's per-thread run-queue wait (schedstat), its CPU time, CPU frequency, throttle counts, temperatures."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    threads = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            text = _read(f"/proc/self/task/{tid}/schedstat")
            if text and len(text.split()) >= 2:
                threads[tid] = [int(v) for v in text.split()[:2]]
    except OSError:
        threads = None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu_dir = "/sys/devices/system/cpu"
    temps = {}
    try:
        zones = sorted(z for z in os.listdir("/sys/class/thermal") if z.startswith("thermal_zone"))
    except OSError:
        zones = []
    for z in zones:
        name, temp = _read(f"/sys/class/thermal/{z}/type"), _read(f"/sys/class/thermal/{z}/temp")
        if name and temp and temp.strip().lstrip("-").isdigit():
            temps[f"{name.strip()} ({z})"] = int(temp) / 1000.0
    return {"t": time.monotonic(), "cpus": cpus, "online_cpus": os.cpu_count() or len(cpus),
            "loadavg": _read("/proc/loadavg"), "stat": _read("/proc/stat"), "pressure": _read("/proc/pressure/cpu"),
            "threads": threads or None, "self_cpu_s": ru.ru_utime + ru.ru_stime,
            "freq_khz": {c: _read(f"{cpu_dir}/cpu{c}/cpufreq/scaling_cur_freq") for c in cpus},
            "throttle": {c: _read(f"{cpu_dir}/cpu{c}/thermal_throttle/core_throttle_count") for c in cpus},
            "temp_c": temps, "clk_tck": os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100}


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--runtime", required=True, choices=RUNTIMES)
    ap.add_argument("--inputs", help=".npy of preprocessed NCHW float32 images (else random inputs of --shape)")
    ap.add_argument("--shape", help="C,H,W of random inputs when --inputs is not given")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--min-warmup", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--min-runs", type=int, default=10)
    ap.add_argument("--max-runs", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    np = import_or_fail("numpy")
    if not os.path.isfile(args.model):
        fail(2, f"model file {args.model} not found on the device")
    if args.inputs:
        inputs = np.load(args.inputs).astype(np.float32, copy=False)
        source = "provided (real images sent by the host)"
    else:
        if not args.shape:
            fail(2, "give --inputs FILE.npy or --shape C,H,W")
        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((max(int(b) for b in args.batch.split(",")),
                                      *(int(v) for v in args.shape.split(",")))).astype(np.float32)
        source = "random (seed 0)"
    try:
        run, info = load(args.runtime, args.model, args.threads, args.device)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - report what the runtime said
        fail(2, f"{args.runtime} could not load {args.model}: {type(exc).__name__}: {exc}")
    results = []
    for b in (int(v) for v in args.batch.split(",")):
        x = batch_of(np, inputs, b)
        n, t_start = 0, time.perf_counter()
        while n < args.min_warmup or time.perf_counter() - t_start < args.warmup:
            run(x)
            n += 1
        warm_s = time.perf_counter() - t_start
        gc.collect()
        before = raw_snapshot()
        start_unix = time.time()
        times = measure(run, x, args.runs, args.duration, args.min_runs, args.max_runs)
        end_unix = time.time()
        after = raw_snapshot()
        results.append({"batch": b, "times_ns": times, "input_shape": list(x.shape),
                        "input_source": source if inputs.shape[0] >= b else
                        f"{source}, {inputs.shape[0]} image(s) repeated to {b}",
                        "warmup": {"runs": n, "seconds": round(warm_s, 4), "warmup_s": args.warmup,
                                   "min_warmup": args.min_warmup},
                        "window": {"start_unix": start_unix, "end_unix": end_unix},
                        "snapshots": {"before": before, "after": after}})
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model"):
                    cpu = value.strip()
                    break
    except OSError:
        pass
    out = {"results": results, "runtime_info": info, "peak_rss_mb": peak_rss_mb(),
           "settings": {"runs": args.runs, "duration_s": None if args.runs else args.duration,
                        "min_runs": args.min_runs, "max_runs": args.max_runs},
           "system": {"hostname": socket.gethostname(), "platform": platform.platform(),
                      "machine": platform.machine(), "python": platform.python_version(),
                      "cpu": {"model": cpu, "logical_cores": os.cpu_count(),
                              "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else None},
                      "versions": {info["runtime"]: str(info["version"]), "numpy": np.__version__}}}
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
