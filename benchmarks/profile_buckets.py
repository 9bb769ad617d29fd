"""Where a server's Python time went, from py-spy's collapsed stacks (`peer_gateway.py
--py-spy`): samples whose innermost frame is a wait (poll, select, an idle worker) are left
out, the rest put in the first bucket one of their frames matches.

    .venv/bin/python benchmarks/profile_buckets.py benchmarks/results/peer_gateway_profiles/*.txt
"""

import collections
import sys
from pathlib import Path

WAITS = (
    "Poller.poll",
    "EpollSelector.select",
    "_PollLikeSelector.select",
    "_worker (",
    "Condition.wait",
    "Event.wait",
    "Thread._wait_for_tstate_lock",
    "Socket.poll",
    "select (",
)
BUCKETS = [
    (
        "auth, signing, replay, keypair/session lookup (db, ORM, memo)",
        ("auth.py", "signing.py", "replay.py", "memo.py", "/db.py", "sqlalchemy", "sqlite3"),
    ),
    (
        "Jupyter messages in the per-run kernel-client thread (jupyter_client)",
        ("jupyter_client", "jsonutil", "dateutil", "kernel/session.py"),
    ),
    (
        "thread hand-offs (executor submit, call_soon_threadsafe, loop wake-ups)",
        (
            "run_in_executor",
            "ThreadPoolExecutor.submit",
            "call_soon_threadsafe",
            "_write_to_self",
            "_read_from_self",
        ),
    ),
    ("aiohttp HTTP and WebSocket", ("aiohttp", "web_ws", "web_protocol")),
]


def buckets(path: Path) -> tuple[int, collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    active = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if any(wait in frames[-1] for wait in WAITS):
            continue
        samples = int(number)
        active += samples
        for name, keys in BUCKETS:
            if any(key in frame for frame in frames for key in keys):
                counts[name] += samples
                break
        else:
            counts["other (asyncio, streams, native forward, logs, ...)"] += samples
    return active, counts


def main() -> None:
    for name in sys.argv[1:]:
        active, counts = buckets(Path(name))
        print(f"{name}: {active} active samples")
        for bucket, samples in counts.most_common():
            print(f"  {samples * 100 / max(active, 1):5.1f}%  {bucket}")


if __name__ == "__main__":
    main()
