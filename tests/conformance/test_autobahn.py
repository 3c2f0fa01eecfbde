"""Autobahn Testsuite, quick set (every group but 12 and 13, ~20 s): a gate in ``make test``.

Output: test-artifacts/autobahn-quick/ (report/index.html per case). ``make conformance``
runs all 517 cases. Skipped, loudly, only when Python 2.7 is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.autobahn import (
    ALLOWLIST,
    ROOT,
    CaseResult,
    install,
    judge,
    load_allowlist,
    run,
)
from server_process import TIMEOUT


@pytest.mark.timeout(120 * TIMEOUT)
def test_autobahn_quick_set() -> None:
    missing = install()
    if missing is not None:
        pytest.skip(f"AUTOBAHN CONFORMANCE NOT RUN: {missing}")
    outcome = run(
        ROOT / "test-artifacts" / "autobahn-quick", everything=False, wstest_timeout=60 * TIMEOUT
    )
    print(outcome.details())
    assert not outcome.unexpected, outcome.details()


def test_allowlist_entries_have_reasons() -> None:
    allowed = load_allowlist()
    assert all(len(reason) > 20 for reason in allowed.values())


def test_allowlist_needs_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.txt"
    path.write_text("# comment\n7.9.5\n")
    with pytest.raises(ValueError, match="7.9.5 has no reason"):
        load_allowlist(path)
    assert ALLOWLIST.exists()


def case(case_id: str, behavior: str, close: str = "OK") -> CaseResult:
    return CaseResult(case_id, behavior, close, 1000, 1)


def test_judge() -> None:
    results = {
        r.case: r
        for r in (
            case("1.1.1", "OK"),
            case("6.4.1", "NON-STRICT"),
            case("7.1.6", "INFORMATIONAL", "INFORMATIONAL"),
            case("7.9.5", "FAILED", "WRONG CODE"),
            case("7.9.6", "OK", "UNCLEAN"),
            case("2.1", "UNIMPLEMENTED"),
            case("12.1.1", "UNIMPLEMENTED", "UNIMPLEMENTED"),
            case("5.1", "OK"),
        )
    }
    outcome = judge(results, {"7.9.5": "why", "5.1": "stale"}, Path("r"), 1.0)
    assert [r.case for r in outcome.allowed] == ["7.9.5"]
    assert sorted(r.case for r in outcome.unexpected) == ["2.1", "7.9.6"]
    assert outcome.stale == ["5.1"]
