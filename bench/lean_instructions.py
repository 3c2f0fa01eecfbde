"""Instructions the lean REST path runs per request, counted by callgrind (a benchmark
helper, not a test).

    python bench/lean_instructions.py                          # batch-10 and single-0
    python bench/lean_instructions.py --cases batch-10 --src /tmp/other/src   # another tree

CPU time per request on this shared 2-core machine moves by ±30 % with the neighbours'
load, which hides a change of a few µs. An instruction count does not move: this runs the
requests of bench/publish.py (signed, the same bodies) through a real ``LeanConnection``,
``RestApi`` and memory-broker ``Node`` in one process under ``valgrind --tool=callgrind``,
with a transport that only keeps what is written, and counts the instructions of N
requests after 1,000 of warm-up (instrumentation is switched on and off around them with
``callgrind_control``). What it counts is the Python side of a request: framing,
signature and body checks, publishing, metrics, the answer's bytes, the task and one loop
iteration. The kernel's socket work and uvloop's polling are not in it (bench/publish.py
measures the whole). ``--src`` puts another source tree first on the path (an A/B).
Needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WARM_UP = 1000


class KeptTransport:
    """Keeps what is written; the connection never closes."""

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def child(case_name: str, requests: int) -> None:
    """Under valgrind: warm up, then say ``ready``, run the requests, say ``done``."""
    import publish
    from tidings.config import validate_settings
    from tidings.lifecycle import Lifecycle
    from tidings.server.app import InFlight, make_guard
    from tidings.server.lean_http import LeanConnection, LeanRest
    from tidings.server.rest import RestApi

    case = publish.CASES[case_name]
    app = {"id": "12345", "key": "app-key", "secret": "app-secret"}
    limits = {"max_backend_events_per_second": 10**9}  # the rate limit out of the way
    settings = validate_settings({"apps": [{**app, **limits}], "log_level": "warning"})
    lifecycle = Lifecycle(settings)
    await lifecycle.start()
    guard = make_guard(settings)
    guard.start()
    rest = RestApi(lifecycle.node, settings.max_request_body)
    lean = LeanRest(rest, InFlight(), lifecycle.metrics(guard.admission), guard, 3600.0)
    now = int(time.time())
    pool = [
        publish.signed_request(1, case.endpoint, publish.body(case, i), now) for i in range(100)
    ]
    transport = KeptTransport()
    connection = LeanConnection(lean, None)  # type: ignore[arg-type]  # never hands over
    connection.connection_made(transport)  # type: ignore[arg-type]

    async def run(count: int) -> None:
        for i in range(count):
            connection.data_received(pool[i % len(pool)])
            await asyncio.sleep(0)  # the answer's task runs
        if b" 200 OK\r\n" not in transport.last:
            raise SystemExit(f"not answered 200: {transport.last[:200]!r}")

    await run(WARM_UP)
    print("ready", flush=True)
    sys.stdin.readline()
    await run(requests)
    print("done", flush=True)
    sys.stdin.readline()
    guard.close()


def count(case: str, requests: int, src: str | None) -> float:
    """Instructions per request of ``case``, one valgrind run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, str(BENCH)) if p)
    out = Path(f"/tmp/lean-instructions-{os.getpid()}.cg")
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, __file__, "--child", case, "--requests", str(requests)]
    proc = subprocess.Popen(  # noqa: S603
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for line, switch in (("ready", "on"), ("done", "off")):
            if proc.stdout.readline().strip() != line:
                raise SystemExit(f"the child did not say {line}: {proc.communicate()[1][-2000:]}")
            subprocess.run(["callgrind_control", "-i", switch, str(proc.pid)], check=True)  # noqa: S603, S607
            proc.stdin.write("\n")
            proc.stdin.flush()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        for path in glob.glob(f"{out}*"):
            os.remove(path)
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise SystemExit(f"no count from callgrind: {err[-2000:]}")
    return int(found.group(1)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="batch-10,single-0", help="of bench/publish.py")
    parser.add_argument("--requests", type=int, default=1000, help="counted per case")
    parser.add_argument("--src", help="a source tree to measure instead of the installed one")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(child(args.child, args.requests))
        return
    for case in args.cases.split(","):
        print(f"{case}: {count(case, args.requests, args.src):,.0f} instructions per request")


if __name__ == "__main__":
    main()
