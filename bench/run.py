"""``./dev bench``: run the benchmarks on a pinned snapshot of kymwatch's source.

Other people commit to ``src/`` while a 30-minute run goes on, and a file saved
half-way through an edit can break every daemon the benchmarks start. So this
launcher exports ``src/kymwatch`` and the test harness of one commit (default
``HEAD``) into ``bench/out/src/<commit>/`` and runs the suite, and every
``kymwatch`` process it starts, against that copy (``PYTHONPATH``). Uncommitted
changes are not measured unless ``--src worktree`` is given.

    ./dev bench [--src HEAD|<commit>|worktree] [suite options]   # bench/suite.py --help
    ./dev bench profile {rebuild,burst,latency,restart,memory} N [K]   # bench/profile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PINNED = ("src/kymwatch", "tests/harness.py", "tests/helpers_store.py")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def snapshot(rev: str) -> tuple[Path, str]:
    """Export the pinned paths of ``rev`` (once) and return (folder, short commit)."""
    commit = _git("rev-parse", "--short=12", f"{rev}^{{commit}}")
    dest = BENCH / "out" / "src" / commit
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, *PINNED],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        tar = dest / "snapshot.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        tar.unlink()
        done.write_text(commit)
    return dest, commit


def main() -> None:
    """Pin the source, then replace this process with the suite (or the profiler)."""
    args = sys.argv[1:]
    rev = "HEAD"
    if "--src" in args:
        i = args.index("--src")
        rev = args[i + 1]
        del args[i : i + 2]
    script = BENCH / "suite.py"
    if args and args[0] == "profile":
        script, args = BENCH / "profile.py", args[1:]
    env = dict(os.environ)
    if rev == "worktree":
        dirty = bool(_git("status", "--porcelain", "--", "src"))
        env["KYMWATCH_BENCH_SRC"] = _git("rev-parse", "--short=12", "HEAD") + ("+dirty" * dirty)
        env["KYMWATCH_BENCH_ROOT"] = str(REPO)
    else:
        root, commit = snapshot(rev)
        env["KYMWATCH_BENCH_SRC"] = commit
        env["KYMWATCH_BENCH_ROOT"] = str(root)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root / "src"), env.get("PYTHONPATH", "")) if p
        )
    os.execve(sys.executable, [sys.executable, str(script), *args], env)


if __name__ == "__main__":
    main()
