"""Run the Autobahn Testsuite against ``tidings serve --conformance`` and gate on the results.

Used by tests/conformance/test_autobahn.py (the quick set, in ``make test``) and by
``make conformance`` (every case, with the HTML report)::

    .venv/bin/python tests/conformance/autobahn.py --all --outdir test-artifacts/autobahn

The suite's ``wstest`` runs from the Python 2.7 virtualenv that tests/conformance/install.sh
builds under .cache/ab27. A case passes when its behaviour is OK, NON-STRICT or
INFORMATIONAL (UNIMPLEMENTED only in the permessage-deflate groups 12 and 13, which Tidings
does not offer); anything else fails unless allowlist.txt names the case with a reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE.parent) not in sys.path:  # run as a script: tests/ holds server_process.py
    sys.path.insert(0, str(HERE.parent))

from server_process import TIMEOUT, ServerProcess, free_port  # noqa: E402

INSTALL_SCRIPT = HERE / "install.sh"
ALLOWLIST = HERE / "allowlist.txt"
AB27_DIR = Path(os.environ.get("AB27_DIR", ROOT / ".cache" / "ab27"))
WSTEST = AB27_DIR / "bin" / "wstest"
ECHO_PATH = "/conformance/echo"
AGENT = "tidings"

# permessage-deflate: Tidings never negotiates it (docs/conformance.md), so these groups
# report UNIMPLEMENTED; the quick set leaves them out (they are 15 of the 16 minutes).
COMPRESSION_GROUPS = ("12", "13")
QUICK_EXCLUDE = tuple(f"{group}.*" for group in COMPRESSION_GROUPS)
# Case counts of autobahntestsuite 25.10.1 (tests/conformance/requirements-py27.txt); a
# report with fewer cases means wstest stopped early.
ALL_CASES = 517
QUICK_CASES = 301

PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One row of wstest's index.json."""

    case: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    duration_ms: int

    @property
    def group(self) -> str:
        return self.case.split(".", 1)[0]

    @property
    def passed(self) -> bool:
        allowed = PASSING | ({"UNIMPLEMENTED"} if self.group in COMPRESSION_GROUPS else set())
        return self.behavior in allowed and self.behavior_close in allowed


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def install() -> str | None:
    """Install wstest if needed; ``None`` when ready, else why it cannot run (no Python 2.7)."""
    completed = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed ({completed.returncode}):\n"
            f"{completed.stdout}{completed.stderr}"
        )
    if WSTEST.exists():
        return None
    return completed.stderr.strip() or f"{WSTEST} missing after {INSTALL_SCRIPT}"


def load_allowlist(path: Path = ALLOWLIST) -> dict[str, str]:
    """``case -> reason`` from lines ``CASE  REASON``; ``#`` starts a comment line."""
    allowed: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        case, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: case {case} has no reason")
        case_key(case)  # a malformed id fails here, naming nothing vague
        allowed[case] = reason.strip()
    return allowed


def spec(url: str, report_dir: Path, exclude: Sequence[str]) -> dict[str, object]:
    return {
        "outdir": str(report_dir),
        "servers": [{"agent": AGENT, "url": url}],
        "cases": ["*"],
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
    }


def read_report(index: Path) -> dict[str, CaseResult]:
    report = json.loads(index.read_text())
    return {
        case: CaseResult(
            case=case,
            behavior=row["behavior"],
            behavior_close=row["behaviorClose"],
            remote_close_code=row.get("remoteCloseCode"),
            duration_ms=int(row.get("duration") or 0),
        )
        for agent_cases in report.values()
        for case, row in agent_cases.items()
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    results: dict[str, CaseResult]
    unexpected: list[CaseResult]  # failed and not allowlisted
    allowed: list[CaseResult]  # failed and allowlisted
    stale: list[str]  # allowlisted but passed (or not run): the entry can go
    report_dir: Path
    seconds: float

    def summary(self) -> str:
        counts = Counter(r.behavior for r in self.results.values())
        parts = ", ".join(f"{counts[b]} {b}" for b in sorted(counts))
        return (
            f"Autobahn: {len(self.results)} cases in {self.seconds:.0f} s: {parts}; "
            f"{len(self.allowed)} allowlisted, {len(self.unexpected)} unexpected "
            f"(report: {self.report_dir / 'index.html'})"
        )

    def details(self) -> str:
        lines = [self.summary()]
        for r in sorted(self.unexpected, key=lambda r: case_key(r.case)):
            lines.append(
                f"  UNEXPECTED {r.case}: {r.behavior} / close {r.behavior_close}"
                f" (remote close code {r.remote_close_code}),"
                f" see {self.report_dir}/{AGENT}_case_{r.case.replace('.', '_')}.html"
            )
        for r in sorted(self.allowed, key=lambda r: case_key(r.case)):
            lines.append(f"  allowlisted {r.case}: {r.behavior} / close {r.behavior_close}")
        for case in self.stale:
            lines.append(f"  note: allowlisted {case} passed; remove it from {ALLOWLIST.name}")
        return "\n".join(lines)


def judge(
    results: Mapping[str, CaseResult],
    allowlist: Mapping[str, str],
    report_dir: Path,
    seconds: float,
) -> Outcome:
    failed = [r for r in results.values() if not r.passed]
    return Outcome(
        results=dict(results),
        unexpected=[r for r in failed if r.case not in allowlist],
        allowed=[r for r in failed if r.case in allowlist],
        stale=sorted((c for c in allowlist if c in results and results[c].passed), key=case_key),
        report_dir=report_dir,
        seconds=seconds,
    )


def run(outdir: Path, *, everything: bool, wstest_timeout: float) -> Outcome:
    """Start ``tidings serve --conformance``, run wstest against its echo, judge the report.

    ``outdir`` receives the spec, wstest's output, the server's log and ``report/``.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    report_dir = outdir / "report"
    config = outdir / "tidings.toml"
    config.write_text(
        'log_level = "warning"\n\n[[apps]]\nid = "1"\nkey = "conformance"\nsecret = "unused"\n'
    )
    server = ServerProcess(free_port(), config, outdir / "server.log", args=("--conformance",))
    spec_path = outdir / "fuzzingclient.json"
    exclude = () if everything else QUICK_EXCLUDE
    spec_path.write_text(json.dumps(spec(server.ws_url + ECHO_PATH, report_dir, exclude)))
    server.start()
    started = time.monotonic()
    try:
        with (outdir / "wstest.log").open("wb") as log:
            subprocess.run(
                [str(WSTEST), "-m", "fuzzingclient", "-s", str(spec_path)],
                cwd=outdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=wstest_timeout,
                check=True,
            )
    finally:
        exit_code = server.stop()
    seconds = time.monotonic() - started
    if exit_code != 0:
        raise RuntimeError(f"tidings exited {exit_code}:\n{server.logs()}")
    results = read_report(report_dir / "index.json")
    expected = ALL_CASES if everything else QUICK_CASES
    if len(results) != expected:
        raise RuntimeError(f"{len(results)} cases in the report, expected {expected}")
    return judge(results, load_allowlist(), report_dir, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--all", action="store_true", help="every case (about 15 min)")
    parser.add_argument(
        "--outdir", type=Path, default=ROOT / "test-artifacts" / "autobahn", help="output"
    )
    options = parser.parse_args(argv)
    missing = install()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    timeout = (600 if options.all else 60) * TIMEOUT
    outcome = run(options.outdir.resolve(), everything=options.all, wstest_timeout=timeout)
    print(outcome.details())
    return 1 if outcome.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
