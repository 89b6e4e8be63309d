#!/usr/bin/env python3
"""Which Debian packages were installed by hand on this machine, and does .ci/run install them?

A green CI on a machine where someone once ran `apt-get install X` by hand proves nothing
about a fresh machine. This reads apt's history (history.log and its rotated copies), keeps
the packages that were asked for by name after --since (when the machine image was made,
or when the machine was handed over new: apt's history cannot tell which runs were the
image's own), and fails when any of them is missing from .ci/apt-packages, the list .ci/run
installs from.

    python tools/ci_apt_audit.py --since "2026-11-29 17:09"
"""

from __future__ import annotations

import argparse
import gzip
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path

HISTORY = Path("/var/log/apt")
CI_PACKAGES = Path(__file__).resolve().parent.parent / ".ci" / "apt-packages"


def entries() -> list[tuple[datetime, list[str]]]:
    """(start time, package names asked for) of every `apt-get install` apt remembers."""
    out = []
    for log in sorted(HISTORY.glob("history.log*"), reverse=True):
        text = (gzip.open(log, "rt") if log.suffix == ".gz" else open(log)).read()
        for block in text.split("\n\n"):
            start = re.search(r"^Start-Date: (.+)$", block, re.M)
            cmd = re.search(r"^Commandline: (.+)$", block, re.M)
            if not (start and cmd):
                continue
            words = shlex.split(cmd.group(1))
            if "install" not in words:
                continue
            args = words[words.index("install") + 1:]
            names = [w.split("=")[0].split(":")[0] for w in args if not w.startswith("-")]
            out.append((datetime.strptime(start.group(1).replace("  ", " "), "%Y-%m-%d %H:%M:%S"), names))
    return sorted(out)


def ci_packages() -> set[str]:
    return {line.split("#")[0].strip() for line in CI_PACKAGES.read_text().splitlines()} - {""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--since", required=True, help="the image's time: only installs after it (YYYY-MM-DD HH:MM)")
    args = ap.parse_args()
    all_entries = entries()
    since = datetime.fromisoformat(args.since)
    wanted = ci_packages()
    by_hand = [(t, n) for t, names in all_entries if t > since for n in names]
    print(f"apt installs asked for by name since {since:%Y-%m-%d %H:%M}: {len(by_hand)}")
    missing = []
    for t, name in by_hand:
        ok = name in wanted
        print(f"  {t:%Y-%m-%d %H:%M}  {name:<24} {'in .ci/apt-packages' if ok else 'NOT installed by .ci/run'}")
        if not ok:
            missing.append(name)
    if missing:
        print(f"fail: .ci/run does not install {' '.join(sorted(set(missing)))}; add them to .ci/apt-packages "
              "or show the build does not use them")
        return 1
    print("ok: everything installed by hand since then is installed by .ci/run too")
    return 0


if __name__ == "__main__":
    sys.exit(main())
