"""What the agent hop costs: `1+1` round trips through `cogbox serve`, with the kernels in the
manager's process (`--agent embedded`) and behind the agent channel (`--agent process`, the
default). One session, sequential native execute calls on one keep-alive HTTP connection.

    sudo .venv/bin/python benchmarks/agent_hop.py [--runs 300]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.support import Service, stdout_of


def measure(mode: str, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="cogbox-hop-") as folder:
        directory = Path(folder)
        service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}")
        service.extra_env["COGBOX_AGENT"] = mode
        service.start("--pool", "python=0")
        try:
            client = service.keypair()
            ref = client.create("python")["id"]
            http = requests.Session()
            url = f"{service.url}/v1/sessions/{ref}/execute"
            times = []
            for i in range(runs + 20):
                started = time.perf_counter()
                response = http.post(url, json={"code": "print(1+1)"}, auth=client.signer)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200 and stdout_of(response.json()) == "2\n"
                if i >= 20:  # warm-up
                    times.append(elapsed * 1000)
            return times
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    for mode in ("embedded", "process"):
        times = sorted(measure(mode, args.runs))
        p50, p90 = statistics.median(times), times[int(len(times) * 0.9)]
        print(f"{mode:9} 1+1 round trip: median {p50:.2f} ms, p90 {p90:.2f} ms, n={len(times)}")


if __name__ == "__main__":
    main()
