"""--profile: py-spy a Python server during the saturation window (bench/fanout.py).

By default py-spy reads the server's memory without stopping it (--nonblocking) and groups
samples by function: the server runs at full speed, but py-spy warns that a stack read while
it changes may be wrong. --profile-lines stops the server for each sample and groups by
source line: consistent stacks, and which line of a function the time goes to (uvicorn's
``send`` is one function from its ``await`` to its ``transport.write``), at the price of the
pauses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from procs import CLIENT_CORE, PYTHON, start, stop


def start_profiler(
    pid: int, folder: Path, tag: str, seconds: float, lines: bool = False
) -> subprocess.Popen[bytes]:
    """py-spy on the client's core for the window: by function without pausing the server,
    or (``lines``) by line, pausing it for each sample."""
    out = folder / f"pyspy-{tag}.txt"
    spy = str(Path(PYTHON).parent / "py-spy")
    cmd = ["taskset", "-c", CLIENT_CORE, spy, "record", "--pid", str(pid)]
    cmd += [] if lines else ["--nonblocking", "--function"]
    cmd += ["--rate", "200", "--format", "raw", "--output", str(out)]
    cmd += ["--duration", str(max(1, int(seconds)))]
    return start(cmd, folder / f"pyspy-{tag}.log", stdout=subprocess.DEVNULL)


def finish(spy: subprocess.Popen[bytes], folder: Path, tag: str) -> dict[str, Any]:
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    stop(spy)
    return summary(folder / f"pyspy-{tag}.txt")


def summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive share of samples per function, from py-spy's collapsed stacks."""
    if not path.exists():
        return {"error": f"no profile written ({path.name})"}
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        pairs = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100.0 * c / total, 1)) for name, c in pairs]

    return {"samples": total, "file": path.name, "self": ranked(own), "inclusive": ranked(incl)}


def print_profiles(records: list[dict[str, Any]], top: int = 15) -> None:
    for r in records:
        prof = r.get("saturate", {}).get("profile")
        if not prof or "self" not in prof:
            continue
        print(f"\nprofile {r['server']} N={r['n']} run {r['run'] + 1} ({prof['samples']} samples)")
        print("  self %   function")
        for name, share in prof["self"][:top]:
            print(f"  {share:6.1f}   {name}")
        print("  incl %   function")
        for name, share in prof["inclusive"][:top]:
            print(f"  {share:6.1f}   {name}")
