#!/usr/bin/env python3
"""Fail a CI step whose pytest run proves too little: fewer tests ran than the floor (zero
included), or a test that CI must run was skipped.

A run that collects nothing, or whose tests all skip for want of a device or a tool, exits
0 under pytest; this reads the run's JUnit XML (pytest --junitxml) and says, in one line
per problem, why such a run does not pass.

    .ci/testcount.py REPORT.xml --min N [--must-run PATH_PREFIX ...]
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


@dataclass
class Counts:
    ran: int = 0                  # passed or failed: a test that reached its asserts
    skipped: dict[str, str] = field(default_factory=dict)  # test id -> skip reason


def _test_id(case: ET.Element) -> str:
    # pytest writes classname "tests.model.test_rpc" (a class adds ".TestX") and the name
    return f"{case.get('classname', '')}::{case.get('name', '')}"


def _dotted(prefix: str) -> str:
    """tests/model/test_rpc.py::test_stock -> tests.model.test_rpc::test_stock (the report's form)."""
    path, sep, name = prefix.partition("::")
    return path.removesuffix(".py").replace("/", ".") + sep + name


def read(report: str) -> Counts:
    counts = Counts()
    for case in ET.parse(report).getroot().iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            counts.skipped[_test_id(case)] = (skip.get("message") or "").strip()
        else:
            counts.ran += 1
    return counts


def problems(counts: Counts, floor: int, must_run: list[str]) -> list[str]:
    out = []
    if counts.ran < max(floor, 1):
        out.append(f"only {counts.ran} tests ran (the floor is {max(floor, 1)}); "
                   f"{len(counts.skipped)} skipped")
    prefixes = [_dotted(p) for p in must_run]
    for test, reason in sorted(counts.skipped.items()):
        if any(test.startswith(prefix) for prefix in prefixes):
            out.append(f"{test} must run in CI but was skipped: {reason}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="pytest's --junitxml file")
    parser.add_argument("--min", type=int, required=True, help="fewest tests that must run (not skip)")
    parser.add_argument("--must-run", nargs="*", default=[], metavar="PREFIX",
                        help="tests (path or path::name prefixes) that must not skip")
    args = parser.parse_args(argv)
    try:
        counts = read(args.report)
    except (OSError, ET.ParseError) as e:
        print(f"ci: cannot read the test report {args.report}: {e}", file=sys.stderr)
        return 1
    found = problems(counts, args.min, args.must_run)
    for line in found:
        print(f"ci: {line}", file=sys.stderr)
    if not found:
        print(f"ci: {counts.ran} tests ran (floor {args.min}), {len(counts.skipped)} skipped")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
