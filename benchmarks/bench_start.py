"""How long `python app.py` takes to answer, against an empty Gradio app: the floor any Gradio app pays
(Python, importing gradio, launching a server).

    python -m benchmarks.bench_start [--runs 5] [--out benchmarks/results/start.json]

Each run spawns the process and polls http://127.0.0.1:PORT/gradio_api/info every 20 ms until it answers
("answers": wall seconds from spawn). For the app it then asks /sample for one caption, which waits for the
bundle's background load ("first result"). App and baseline runs alternate, so a drifting machine hits both;
medians are printed with the ratio of the medians. Two kinds of app start:
  * warm: CLIPGPT_CACHE already holds the built-in gallery (a first run built it);
  * first: an empty CLIPGPT_CACHE each run (the gallery then builds in a background child process).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMPTY_APP = "import gradio as gr\nwith gr.Blocks() as demo:\n    gr.Markdown('empty')\ndemo.launch(server_port={port})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(proc: subprocess.Popen, url: str, timeout: float = 300) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{proc.args} did not answer in {timeout} s")


def one_start(cmd: list[str], port: int, env: dict, first_result: bool = False) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_answering(proc, url)
        out = {"answers": time.perf_counter() - t0}
        if first_result:
            from gradio_client import Client
            Client(url, verbose=False).predict(n=1, temperature=1.0, top_k=0, top_p=1.0, prefix="a", seed=0,
                                               api_name="/sample")
            out["first_result"] = time.perf_counter() - t0
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def build_gallery(env: dict) -> None:
    """Start the app once and search its built-in gallery, which waits until the gallery is built and cached."""
    from gradio_client import Client
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_answering(proc, url)
        print("building the built-in gallery for the warm starts ...", flush=True)
        Client(url, verbose=False).predict(text="a red circle", image=None, text_weight=0.5, k=1,
                                           source="Built-in gallery", folder="", url="", indice_name="shapes",
                                           text_mode="raw", api_name="/search")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return round(statistics.median(values), 2) if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/start.json")
    args = p.parse_args()
    cache = tempfile.mkdtemp(prefix="clipgpt-start-")
    env = dict(os.environ, CLIPGPT_CACHE=cache, GRADIO_ANALYTICS_ENABLED="False")
    rows: dict[str, list[dict]] = {"app first": [], "app warm": [], "empty gradio app": []}
    build_gallery(env)
    for i in range(args.runs + 1):                      # run 0: a warm-up
        counted = i > 0
        first_cache = tempfile.mkdtemp(prefix="clipgpt-first-")
        port = free_port()
        first = one_start([sys.executable, "app.py", "--port", str(port)], port, env | {"CLIPGPT_CACHE": first_cache})
        port = free_port()
        warm = one_start([sys.executable, "app.py", "--port", str(port)], port, env, first_result=True)
        port = free_port()
        empty = one_start([sys.executable, "-c", EMPTY_APP.format(port=port)], port, env)
        if counted:
            rows["app first"].append(first)
            rows["app warm"].append(warm)
            rows["empty gradio app"].append(empty)
        print(f"run {i}{'' if counted else ' (warm-up)'}: first {first['answers']:.2f} s, warm {warm['answers']:.2f} s "
              f"(first result {warm['first_result']:.2f} s), empty Gradio app {empty['answers']:.2f} s", flush=True)
    summary = {k: {"answers_median_s": median(v, "answers"), "first_result_median_s": median(v, "first_result")}
               for k, v in rows.items()}
    floor = summary["empty gradio app"]["answers_median_s"]
    for k in ("app first", "app warm"):
        summary[k]["ratio_to_empty_gradio_app"] = round(summary[k]["answers_median_s"] / floor, 2)
    result = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "runs": args.runs,
              "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'start':<18} {'answers (median s)':>19} {'first result':>13} {'/ empty Gradio app':>19}")
    for k, v in summary.items():
        print(f"{k:<18} {v['answers_median_s']:>19} {v['first_result_median_s'] or '':>13} "
              f"{v.get('ratio_to_empty_gradio_app', 1.0):>19}")


if __name__ == "__main__":
    main()
