"""Benchmark serving: many users at once on one app, against one user, and against the floor, in one run.

    python -m benchmarks.bench_serve [--clients 20] [--requests 10] [--runs 1] [--baseline-root DIR]
                                     [--split-cores] [--out benchmarks/results/serve.json]

Starts the app as a user does (`python app.py --port P`, the built-in bundle) and, for the floor, the same app
with every measured endpoint answering its recorded reply without model work (`--serve floor`: the same
components, queue and file serving; only the models are gone); with --baseline-root, also the app of another
checkout (e.g. the commit before batching: `git worktree add /tmp/before be2784f`), the same way. Against each,
with gradio_client as users call it:
  1. one client: `--single` requests per endpoint, one at a time -> the single-client median;
  2. load: `--clients` clients, each its own gradio_client, each sending `--requests` mixed requests (sample,
     search, zero_shot, caption, in a per-client seeded order) back to back, `--runs` times -> p50 / p95 per
     endpoint, the p95 over the single-client median, requests per second, failures (with their messages);
  3. a long job (the app only): one client renders 16 images over and over while another sends quick requests
     one at a time -> the quick requests' p50 / p95 beside their single-client medians.
Queries are new each run, as users bring their own: 256 ShapesWorld images drawn by the independent renderer
(benchmarks/alt_render.py) and 864 world phrases, so no cache sees a run's queries before it.
The server's resident memory (psutil, the process and its children) is read before the load and after each run, and
its CPU time over each run: CPU seconds a request, and the share of the two cores the server and the clients used.
Whole-request latencies as a client sees them, gradio_client's `predict`, on the same 2 cores as the server; with
--split-cores the server is held to core 0 and the clients to core 1 (sched_setaffinity), as users' clients run on
their own machines: the server then has one core, and the clients' CPU no longer competes with it. The report ends
with each endpoint's p95 over the floor's (the mean of the runs' p95s).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("sample", "search", "zero_shot", "caption")
def query_text(i: int) -> str:
    """The i-th search query: 864 distinct world phrases ("a small red circle in the top left"), phrased as users do."""
    from clipgpt_core import world
    sizes, colours = list(world.SIZES), list(world.COLOURS)
    size, colour = sizes[i % 2], colours[(i // 2) % 8]
    shape, position = world.SHAPES[(i // 16) % 6], world.POSITIONS[(i // 96) % 9]
    return f"a {size} {colour} {shape} in the {position}"


IMAGES = 256        # distinct query images: users bring their own, so no cache sees the same image twice in a run


def query_images(n: int = IMAGES, seed: int = 0) -> list[Path]:
    """n ShapesWorld scenes drawn by the independent renderer (benchmarks/alt_render.py), as PNG files, made once."""
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_images_{n}_{seed}"
    files = [folder / f"{i:04d}.png" for i in range(n)]
    if not all(f.is_file() for f in files):
        from benchmarks.alt_render import redraw
        from clipgpt_core import world
        rng = random.Random(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for f, im in zip(files, redraw([world.sample_scene(rng) for _ in range(n)], seed)):
            im.save(f)
    return files


def request(endpoint: str, i: int) -> tuple[tuple, dict]:
    """The i-th request to an endpoint -> (args, kwargs) for Client.predict."""
    from gradio_client import handle_file

    image = handle_file(str(query_images()[i % IMAGES]))
    if endpoint == "sample":
        return (), {"n": 8, "seed": i}
    if endpoint == "search":
        return (query_text(i),), {"k": 12}
    if endpoint == "zero_shot":
        return (image,), {}
    if endpoint == "caption":
        return (image,), {}
    if endpoint == "render":
        return ("a red star left of a blue circle",), {"num_images": 16, "seed": i}
    raise ValueError(endpoint)


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, root: Path = ROOT, app_args: tuple = (), cpus: set[int] | None = None
          ) -> tuple[subprocess.Popen, str]:
    """The app (`python app.py [app_args]` in `root`) or the floor, on a free loopback port -> (process, url) once it
    answers. cpus: the cores the server may run on (None: any)."""
    from gradio_client import Client
    port = free_port()
    cmd = ([sys.executable, "app.py", *app_args, "--port", str(port)] if kind != "floor" else
           [sys.executable, "-m", "benchmarks.bench_serve", "--serve", "floor", "--port", str(port)])
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{kind}.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ | {"PYTHONPATH": str(root)},
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the {kind} server exited ({proc.returncode}); see {log.name}")
        try:
            Client(url, verbose=False)
            return proc, url
        except Exception:        # not up yet
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the {kind} server did not answer in 300 s; see {log.name}")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (default: this one, the clients) and its children so far (a live
    child counts: psutil reads each process's own times)."""
    import psutil
    p = psutil.Process(pid)
    return sum(t.user + t.system for t in (q.cpu_times() for q in [p, *p.children(recursive=True)]))


def memory_mb(proc: subprocess.Popen) -> float:
    import psutil
    p = psutil.Process(proc.pid)
    return round(sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20, 1)


def serve_floor(port: int) -> None:
    """The app's UI and queue with every measured endpoint answering what it answered once, recorded here at start
    (no model work while measured): the floor that Gradio's queue, HTTP and file serving set."""
    from gradio_client import Client

    from clipgpt_app.main import QUEUE, build_demo, threads_per_call
    threads_per_call(1)                                   # as the app runs (before torch is imported)
    from clipgpt_core.bundle import load_bundle
    demo = build_demo(load_bundle(), progress=False)
    demo.queue(**QUEUE).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    recorded = {}
    for endpoint in QUICK:
        args, kwargs = request(endpoint, 0)
        recorded[endpoint] = client.predict(*args, api_name=f"/{endpoint}", **kwargs)
    for fn in demo.fns.values():
        if fn.api_name in recorded:
            reply = recorded[fn.api_name]
            reply = reply if isinstance(reply, (tuple, list)) and len(fn.outputs) > 1 else [reply]
            outputs = fn.outputs
            fn.fn = (lambda outs, rep: lambda *a, **k: tuple(
                _as_output(o, r) for o, r in zip(outs, rep)) if len(outs) > 1 else _as_output(outs[0], rep[0]))(
                outputs, reply)
    print("floor ready", flush=True)
    demo.block_thread()


def _as_output(component, value):
    """A client's view of an output -> what the event function returns for it (gallery items as file paths)."""
    import gradio as gr
    if isinstance(component, gr.Gallery):
        return [(item["image"], item.get("caption")) for item in value]
    if isinstance(component, gr.Label) and isinstance(value, dict) and "confidences" in value:
        return {c["label"]: c["confidence"] for c in value["confidences"]}
    if isinstance(component, gr.Dataframe) and isinstance(value, dict):
        return value.get("data", value)
    return value


# ----------------------------------------------------------------------------- load
def timed(client, endpoint: str, i: int) -> tuple[float, str | None]:
    args, kwargs = request(endpoint, i)
    t = time.perf_counter()
    try:
        client.predict(*args, api_name=f"/{endpoint}", **kwargs)
        return time.perf_counter() - t, None
    except Exception as e:       # a failed request is a result here: counted and its message kept
        return time.perf_counter() - t, f"{type(e).__name__}: {str(e)[:200]}"


def single_client(url: str, n: int) -> dict:
    from gradio_client import Client
    client = Client(url, verbose=False)
    out = {}
    for endpoint in QUICK:
        timed(client, endpoint, 99)                                   # warm
        out[endpoint] = float(np.median([timed(client, endpoint, i)[0] for i in range(n)]))
    return out


def load(url: str, clients: int, requests: int, seed: int) -> dict:
    """clients x requests mixed requests, every client back to back -> latencies per endpoint, failures, seconds."""
    from gradio_client import Client
    pool = [Client(url, verbose=False) for _ in range(clients)]
    lat = {e: [] for e in QUICK}
    failures, lock = [], threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(c: int) -> None:
        rng = random.Random(seed * 1000 + c)
        order = [QUICK[(c + k) % len(QUICK)] for k in range(requests)]
        rng.shuffle(order)
        barrier.wait()
        for k, endpoint in enumerate(order):
            s, err = timed(pool[c], endpoint, (seed * clients + c) * requests + k)   # new queries each run
            with lock:
                (failures.append(f"{endpoint}: {err}") if err else lat[endpoint].append(s))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return {"latencies": lat, "failures": failures, "seconds": time.perf_counter() - t0}


def with_long_job(url: str, n: int) -> dict:
    """Quick requests one at a time while another client renders 16 images over and over."""
    from gradio_client import Client
    stop = threading.Event()
    renders = []

    def long_job():
        client = Client(url, verbose=False)
        i = 0
        while not stop.is_set():
            renders.append(timed(client, "render", i)[0])
            i += 1

    job = threading.Thread(target=long_job)
    job.start()
    time.sleep(3.0)                                                  # the render under way
    client = Client(url, verbose=False)
    lat = {e: [timed(client, e, i)[0] for i in range(n)] for e in ("sample", "search", "zero_shot")}
    stop.set()
    job.join()
    return {"latencies": lat, "renders": len(renders)}


def summary(lat: dict, single: dict) -> dict:
    out = {}
    for e, xs in lat.items():
        if xs:
            p50, p95 = float(np.percentile(xs, 50)), float(np.percentile(xs, 95))
            out[e] = {"p50": round(p50, 3), "p95": round(p95, 3), "single": round(single[e], 3),
                      "p95_over_single": round(p95 / single[e], 2), "n": len(xs)}
    return out


def measure(kind: str, args, root: Path = ROOT) -> dict:
    proc, url = start(kind, root, cpus={0} if args.split_cores else None)
    try:
        single = single_client(url, args.single)
        report = {"single_client_median": {e: round(s, 3) for e, s in single.items()},
                  "memory_mb_before": memory_mb(proc), "runs": []}
        for r in range(args.runs):
            server, clients = cpu_seconds(proc.pid), cpu_seconds()
            res = load(url, args.clients, args.requests, seed=r)
            n = sum(len(x) for x in res["latencies"].values())
            server = cpu_seconds(proc.pid) - server
            clients = cpu_seconds() - clients - server              # the server is this process's child
            report["runs"].append({"endpoints": summary(res["latencies"], single),
                                   "requests_per_second": round(n / res["seconds"], 2), "failures": res["failures"],
                                   "memory_mb_after": memory_mb(proc),
                                   # where the two cores went: the server's CPU a request, and the share of the
                                   # run's 2-core capacity the server and the clients (this process) used
                                   "server_cpu_s_per_request": round(server / max(n, 1), 3),
                                   "cpu_share": {"server": round(server / (2 * res["seconds"]), 2),
                                                 "clients": round(clients / (2 * res["seconds"]), 2)}})
            print(kind, f"run {r + 1}:", json.dumps(report["runs"][-1]), flush=True)
        if kind != "floor" and not args.no_long_job:
            res = with_long_job(url, args.single)
            report["long_job"] = {"endpoints": summary(res["latencies"], single), "renders_of_16": res["renders"]}
            print(kind, "long job:", json.dumps(report["long_job"]), flush=True)
        return report
    finally:
        proc.terminate()
        proc.wait(30)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=10, help="mixed requests per client")
    p.add_argument("--runs", type=int, default=1, help="load runs against each server")
    p.add_argument("--single", type=int, default=10, help="single-client requests per endpoint")
    p.add_argument("--no-floor", action="store_true", help="skip the floor (the app without model work)")
    p.add_argument("--no-long-job", action="store_true")
    p.add_argument("--baseline-root", default=None, help="another checkout whose app.py runs as the baseline")
    p.add_argument("--split-cores", action="store_true", help="the server on core 0, the clients on core 1")
    p.add_argument("--out", default="benchmarks/results/serve.json")
    p.add_argument("--serve", choices=("floor",), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve_floor(args.port)
    if args.split_cores:
        os.sched_setaffinity(0, {1})        # the clients (this process's threads); the servers get core 0
    report = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "clients": args.clients,
              "requests_per_client": args.requests, "machine": f"{os.cpu_count()} CPUs",
              "cores": "server: core 0, clients: core 1" if args.split_cores else "server and clients share all",
              "app": measure("app", args)}
    if args.baseline_root:
        report["baseline"] = measure("baseline", args, Path(args.baseline_root).resolve())
        report["baseline_root"] = args.baseline_root
    if not args.no_floor:
        report["floor"] = measure("floor", args)
        report["p95_over_floor"] = {k: over_floor(report[k], report["floor"]) for k in ("app", "baseline") if k in report}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_report(report)


def over_floor(server: dict, floor: dict) -> dict:
    """Each endpoint's p95 (the mean over runs) over the floor's."""
    mean = lambda rep, e: np.mean([r["endpoints"][e]["p95"] for r in rep["runs"]])   # noqa: E731
    return {e: round(float(mean(server, e) / mean(floor, e)), 2) for e in server["runs"][0]["endpoints"]}


def print_report(report: dict) -> None:
    print(f"\n{report['clients']} clients x {report['requests_per_client']} mixed requests ({report['command']})")
    print("| server | endpoint | single median s | p50 s | p95 s | p95 / single | req/s | failures |\n"
          "|---|---|---|---|---|---|---|---|")
    for kind in ("app", "baseline", "floor"):
        if kind not in report:
            continue
        for r in report[kind]["runs"]:
            for e, s in r["endpoints"].items():
                print(f"| {kind} | {e} | {s['single']} | {s['p50']} | {s['p95']} | {s['p95_over_single']} | "
                      f"{r['requests_per_second']} | {len(r['failures'])} |")
    for kind in ("app", "baseline"):
        for e, s in report.get(kind, {}).get("long_job", {}).get("endpoints", {}).items():
            print(f"| {kind}, beside a 16-image render | {e} | {s['single']} | {s['p50']} | {s['p95']} | "
                  f"{s['p95_over_single']} | | |")
    for kind, ratios in report.get("p95_over_floor", {}).items():
        print(f"{kind}: p95 over the floor's", ratios)
    for kind in ("app", "baseline", "floor"):
        if kind in report:
            print(f"{kind} memory MB: before {report[kind]['memory_mb_before']}, after each run "
                  f"{[r['memory_mb_after'] for r in report[kind]['runs']]}")


if __name__ == "__main__":
    main()
