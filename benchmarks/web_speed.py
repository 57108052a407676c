"""How fast `synthmed serve` answers on this machine: a reader study under load, the latent explorer, GAN Lab.

Starts the real server (`python -m synthmed serve`) on loopback in a child process and measures from a client:

- **readers**: a 10 + 10 image study, `--readers` readers at once (threads, one keep-alive connection each), each
  fetching and answering all 20 images as the page does; per-answer latency (every answer committed to SQLite
  with synchronous=FULL before the reply), answers/s, and the answers counted in the database; `--repeats` times;
- **latent explorer**: the first image of a run (model load) and then `--latent-requests` images along the slider;
- **GAN Lab**: milliseconds per training step for each loss at the page's default sizes, 10 steps per request.

    python benchmarks/web_speed.py   # --run runs/benchmarks/walking-skeleton-default, JSON in benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import ROOT, machine, source_state

sys.path.insert(0, str(ROOT / "tests"))
from webserver import Client, free_port  # noqa: E402  (the tests' client: one keep-alive connection, JSON)

SRC = ROOT / "src"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def start_server(root: Path, database: Path, sources: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    process = subprocess.Popen([sys.executable, "-m", "synthmed", "serve", "--root", str(root), "--db",
                                str(database), "--port", str(port), "--source-dir", str(sources)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            client = Client(f"http://127.0.0.1:{port}")
            if client.request("GET", "/healthz")[0] == 200:
                client.close()
                return process
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("synthmed serve did not start")
        time.sleep(0.2)


def one_reader(base_url: str, token: str, latencies: list[float], failures: list[str], lock: threading.Lock) -> None:
    client = Client(base_url)
    mine: list[float] = []
    try:
        state = client.json("GET", f"/api/read/{token}/state")
        while not state["done"]:
            position = state["position"]
            status, _ = client.request("GET", f"/api/read/{token}/image/{position}")
            if status != 200:
                raise RuntimeError(f"image {status}")
            body = {"position": position, "answer": ("real", "synthetic")[position % 2], "confidence": 3}
            start = time.perf_counter()
            status, data = client.request("POST", f"/api/read/{token}/answer", token, body)
            mine.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"answer {status}")
            state = json.loads(data)
    except Exception as exc:  # noqa: BLE001 - counted and reported
        with lock:
            failures.append(repr(exc))
    finally:
        client.close()
    with lock:
        latencies.extend(mine)


def measure_readers(base_url: str, organiser: str, database: Path, sources: Path, readers: int, repeat: int
                    ) -> dict[str, Any]:
    client = Client(base_url)
    study = client.json("POST", "/api/studies", organiser, {
        "name": f"load {repeat}", "real": str(sources / "real.npz"), "synthetic": str(sources / "synthetic.npz"),
        "n_per_class": 10, "readers": readers, "real_split": "all", "seed": repeat})
    client.close()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=one_reader, args=(base_url, r["token"], latencies, failures, lock))
               for r in study["readers"]]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT COUNT(*) FROM answers JOIN readers ON readers.id = answers.reader_id "
                            "WHERE readers.study_id = ?", (study["id"],)).fetchone()[0]
    return {"readers": readers, "answers_sent": len(latencies), "answers_stored": stored, "failures": failures,
            "wall_seconds": round(wall, 2), "answers_per_second": round(len(latencies) / wall, 1),
            "answer_latency_ms": {"p50": round(1000 * percentile(latencies, 50), 1),
                                  "p95": round(1000 * percentile(latencies, 95), 1),
                                  "max": round(1000 * max(latencies), 1)}}


def measure_latent(base_url: str, organiser: str, run_name: str, requests: int) -> dict[str, Any]:
    client = Client(base_url)
    runs = client.json("GET", "/api/latent/runs", organiser)
    run = next((r for r in runs if r["name"] == run_name), None)
    if run is None:
        raise SystemExit(f"{run_name}: not a samplable run under --root ({[r['name'] for r in runs]})")
    times = []
    for i in range(requests + 1):
        start = time.perf_counter()
        status, png = client.request("GET", f"/api/latent/{run['id']}/image.png?seeds=0,1,2&t={i / requests:.3f}",
                                     organiser)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"latent image: {status} {png[:200]!r}")
    client.close()
    return {"run": run_name, "latent_dim": run["latent_dim"], "first_request_ms (model load)": round(1000 * times[0]),
            "requests": requests, "image_ms": {"p50": round(1000 * statistics.median(times[1:]), 1),
                                               "p95": round(1000 * percentile(times[1:], 95), 1)}}


def measure_ganlab(base_url: str, organiser: str, steps: int) -> dict[str, Any]:
    client = Client(base_url)
    result = {}
    for loss in ("bce", "lsgan", "wgan-gp", "hinge"):
        config = {"loss": loss, "distribution": "ring"}
        session = client.json("POST", "/api/ganlab/sessions", organiser, {"config": config})
        start = time.perf_counter()
        for _ in range(steps // 10):
            state = client.json("POST", f"/api/ganlab/sessions/{session['id']}/step", organiser, {"steps": 10})
        wall = time.perf_counter() - start
        result[loss] = {"steps": state["step"], "ms_per_step_incl_state": round(1000 * wall / steps, 2),
                        "final_js": state["divergences"]["js"][-1],
                        "divergence_floor_js": state["divergence_floor"]["js"]}
        client.request("DELETE", f"/api/ganlab/sessions/{session['id']}", organiser)
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "benchmarks" / "walking-skeleton-default",
                        help="A trained run for the latent explorer timing; its parent folder is served as --root.")
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latent-requests", type=int, default=30)
    parser.add_argument("--ganlab-steps", type=int, default=200)
    parser.add_argument("--port", type=int, default=0, help="[default: a free port]")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "web_speed_cpu.json")
    args = parser.parse_args()
    run = args.run.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        sources, database = Path(tmp) / "sources", Path(tmp) / "web.sqlite3"
        sources.mkdir()
        rng = np.random.default_rng(0)
        np.savez(sources / "real.npz", images=rng.integers(120, 250, (20, 28, 28), dtype=np.uint8))
        np.savez(sources / "synthetic.npz", images=rng.integers(0, 130, (20, 28, 28), dtype=np.uint8))
        port = args.port or free_port()
        process = start_server(run.parent, database, sources, port)
        try:
            base_url = f"http://127.0.0.1:{port}"
            with sqlite3.connect(database) as db:
                organiser = db.execute("SELECT value FROM meta WHERE key = 'organiser_token'").fetchone()[0]
            readers = [measure_readers(base_url, organiser, database, sources, args.readers, repeat)
                       for repeat in range(args.repeats)]
            latent = measure_latent(base_url, organiser, run.name, args.latent_requests)
            ganlab = measure_ganlab(base_url, organiser, args.ganlab_steps)
        finally:
            process.terminate()
            process.wait(timeout=30)
    report = {"benchmark": "web_speed", "command": "python benchmarks/" + " ".join(
                  [Path(sys.argv[0]).name, *sys.argv[1:]]),
              "machine": machine(torch.device("cpu")), "source": source_state(),
              "server": "python -m synthmed serve (uvicorn, one process), loopback; client threads in another process",
              "reader_study": readers, "latent_explorer": latent, "gan_lab": ganlab}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"reader_study": readers, "latent_explorer": latent, "gan_lab": ganlab}, indent=1))


if __name__ == "__main__":
    main()
