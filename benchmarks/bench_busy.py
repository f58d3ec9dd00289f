"""Benchmark: do the quick tabs keep answering while Stable Diffusion draws? (issue "Real sizes", item 2)

    python -m benchmarks.bench_busy --bundle /tmp/clipgpt-published-bench/bundle [--n 6] [--steps 4]
                                    [--out benchmarks/results/busy.json]

Starts the app as a user does (`python app.py --bundle B --port P`: one torch thread a call, the default) on a
published bundle (benchmarks/bench_published.py builds one at the published sizes, random init), then with
gradio_client: 1. idle: `--n` requests of each quick endpoint (sample, caption, score), one at a time -> medians;
2. busy: one client renders 512x512 images over and over (`--steps` steps, guidance on) while another sends the same
quick requests -> their median and worst beside the idle medians. The issue's bar: within 3x the idle median.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_serve import start



def quick_request(endpoint: str, i: int, image: str) -> tuple:
    from gradio_client import handle_file
    if endpoint == "sample":
        return (2, 0.7, 0, 1.0, "a photo of", i)
    if endpoint == "caption":
        return (handle_file(image), 3, 0, 1.0, 0)
    return (f"a photo of a dog number {i}\na red car",)


def timed(client, endpoint: str, args: tuple) -> float:
    t = time.perf_counter()
    client.predict(*args, api_name=f"/{endpoint}")
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="/tmp/clipgpt-published-bench/bundle")
    p.add_argument("--n", type=int, default=6, help="requests of each quick endpoint, idle and busy")
    p.add_argument("--steps", type=int, default=4, help="denoising steps of each render")
    p.add_argument("--out", default="benchmarks/results/busy.json")
    args = p.parse_args()
    from gradio_client import Client
    image = str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench_busy.png")
    Image.fromarray((np.random.default_rng(0).random((224, 224, 3)) * 255).astype("uint8")).save(image)
    proc, url = start("busy", app_args=("--bundle", args.bundle))
    endpoints = ("sample", "caption", "score")
    try:
        client = Client(url, verbose=False)
        for e in endpoints:                                   # warm: every model loaded and read once
            timed(client, e, quick_request(e, 99, image))
        idle = {e: [timed(client, e, quick_request(e, i, image)) for i in range(args.n)] for e in endpoints}
        stop, renders = threading.Event(), []

        def long_job():
            c = Client(url, verbose=False)
            while not stop.is_set():
                renders.append(timed(c, "render", ("a photo of a dog", "", 7.5, args.steps, len(renders), 1, False,
                                                   True)))

        job = threading.Thread(target=long_job)
        job.start()
        time.sleep(5.0)                                       # the render under way
        busy = {e: [timed(client, e, quick_request(e, 100 + i, image)) for i in range(args.n)] for e in endpoints}
        stop.set()
        job.join()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report = {"command": "python -m benchmarks.bench_busy " + " ".join(sys.argv[1:]), "bundle": args.bundle,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_at_end": os.getloadavg(),
              "renders": {"count": len(renders), "median_s": float(np.median(renders)) if renders else None},
              "endpoints": {}}
    print(f"{'endpoint':10s} {'idle median':>12s} {'busy median':>12s} {'busy max':>10s} {'ratio':>7s}")
    for e in endpoints:
        row = {"idle_median_s": float(np.median(idle[e])), "busy_median_s": float(np.median(busy[e])),
               "busy_max_s": float(np.max(busy[e]))}
        row["ratio"] = row["busy_median_s"] / row["idle_median_s"]
        report["endpoints"][e] = row
        print(f"{e:10s} {row['idle_median_s']:12.2f} {row['busy_median_s']:12.2f} {row['busy_max_s']:10.2f} "
              f"{row['ratio']:7.2f}")
    print(f"renders during the busy phase: {len(renders)}, median {report['renders']['median_s']} s")
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
