"""``make fuzz``: run each atheris harness for a fixed time and report crashes.

    .venv/bin/python fuzz/run.py [--seconds 60] [TARGET ...]

Each target runs as ``python fuzz/fuzz_<target>.py`` under libFuzzer with the checked-in
seeds (``fuzz/corpus/<target>/``, read only) and a working corpus under
``test-artifacts/fuzz/corpus/<target>/`` that grows from run to run. A crash, a timeout or
an out-of-memory leaves its input in ``test-artifacts/fuzz/`` and makes the exit status 1.
To keep a crash as a regression test, copy its input to ``fuzz/regressions/<target>/``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
OUT = ROOT / "test-artifacts" / "fuzz"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))
ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


def findings(target: str) -> list[Path]:
    """The inputs libFuzzer left for ``target`` (crash-, timeout-, oom-...)."""
    return [p for p in OUT.iterdir() if ARTIFACT.match(p.name.removeprefix(f"{target}-"))]


def run_target(target: str, seconds: int, python: str) -> bool:
    """True when the target ran its time without a finding."""
    work = OUT / "corpus" / target
    work.mkdir(parents=True, exist_ok=True)
    log_path = OUT / f"{target}.log"
    before = set(findings(target))
    cmd = [
        python,
        str(FUZZ / f"fuzz_{target}.py"),
        str(work),
        str(FUZZ / "corpus" / target),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={OUT}/{target}-",
        f"-dict={FUZZ / 'pusher.dict'}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=4096",
        "-print_final_stats=1",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONHASHSEED="0")
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=seconds + 120)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this run started
            proc.wait()
            raise
    text = log_path.read_text(errors="replace")
    found = sorted(set(findings(target)) - before)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+)", text)
    summary = f"{target}: {runs[-1] if runs else '?'} inputs in {time.monotonic() - started:.0f} s"
    summary += f", coverage {cov[-1] if cov else '?'}"
    if code == 0 and not found:
        print(f"ok    {summary}", flush=True)
        return True
    print(f"FAIL  {summary}, exit status {code}; log: {log_path.relative_to(ROOT)}")
    for path in found:
        print(f"      input: {path.relative_to(ROOT)}")
    trace = text.find("=== Uncaught Python exception")
    if trace >= 0:
        print(text[trace : trace + 3000])
    else:
        print(text[-3000:])
    print(f"      keep it: cp <input> fuzz/regressions/{target}/<what-it-is>", flush=True)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=TARGETS, metavar="TARGET")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)))
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; known: {TARGETS}")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing {', '.join(args.targets)} for {args.seconds} s each", flush=True)
    failed = [t for t in args.targets if not run_target(t, args.seconds, sys.executable)]
    if failed:
        print(f"crashes in: {', '.join(failed)} (inputs in {OUT.relative_to(ROOT)}/)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
