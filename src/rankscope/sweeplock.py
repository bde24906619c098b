"""One driver per output directory: `<out_dir>/LOCK` names the host and pid that hold it.

Two `rankscope run` on one directory would each run every due run, their workers writing the
same run directories at once. So a driver (run, analyze, reindex) holds the lock while it
writes the store or the run directories; workers never take it: their driver holds it for
them. The file is created with O_CREAT | O_EXCL (atomic, also on NFSv3+), holds JSON {host, pid,
started, command} and is removed when the driver ends, only if it is still ours. A lock whose
process is gone (same host, pid not running, or running but started after the lock was
written: a reused pid) is taken over; a lock from another host is respected, since its pid
cannot be checked from here.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from rankscope.errors import SweepBusy
from rankscope.rundir import LOCK_NAME, SweepDir

__all__ = ["LOCK_NAME", "Holder", "SweepLock", "acquire", "hold"]
_READ_TRIES = 10  # a lock just created is empty until its holder has written it: re-read
_READ_PAUSE_S = 0.05
_ACQUIRE_TRIES = 5  # locks released or taken over under our eyes, before giving up
_GUARD_TRIES = 200  # another driver's takeover of a stale lock takes microseconds
_GUARD_PAUSE_S = 0.01
_PID_REUSE_SLACK_S = 5.0  # /proc's boot time is whole seconds and drifts with NTP


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""

    host: str
    pid: int
    started: float
    command: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.time(), shlex.join(sys.argv))

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        here = self.host == socket.gethostname()
        host = f"this host ({self.host})" if here else f"host {self.host}"
        return f"pid {self.pid} on {host}, started {when} (command: {self.command})"


class SweepLock:
    """A lock this process holds; release() removes its file if it is still ours."""

    def __init__(self, path: Path, holder: Holder, text: str, took_over: Holder | None):
        self.path = path
        self.holder = holder
        self.took_over = took_over
        """The dead driver whose stale lock was taken over, if any."""
        self._text = text
        self._released = False

    def release(self) -> None:
        """Remove the file, unless it is no longer ours (deleted by hand and retaken) or this
        is a forked child (a worker) that inherited the object."""
        if self._released or os.getpid() != self.holder.pid:
            return
        self._released = True
        try:
            if self.path.read_text(encoding="utf-8") == self._text:
                self.path.unlink()
        except (FileNotFoundError, UnicodeDecodeError):
            pass


@contextmanager
def hold(out_dir: Path) -> Iterator[SweepLock]:
    """Hold the output directory's lock for the block (released on any exit)."""
    lock = acquire(out_dir)
    try:
        yield lock
    finally:
        lock.release()


def acquire(out_dir: Path) -> SweepLock:
    """Take `<out_dir>/LOCK` (the directory must exist); SweepBusy if a live driver holds it."""
    path = SweepDir(Path(out_dir)).lock_path
    me = Holder.me()
    text = json.dumps(asdict(me))
    took_over = None
    for _ in range(_ACQUIRE_TRIES):
        if _create(path, text):
            return SweepLock(path, me, text, took_over)
        found = _read(path)
        if found is None:  # released meanwhile
            continue
        seen, other = found
        if other.host != me.host:
            raise SweepBusy(
                f"{path.parent}: another rankscope driver is using this directory: "
                f"{other.describe()}; wait for it to finish or stop it on {other.host}; "
                f"if that driver is gone, delete {path}"
            )
        if _running(other):
            raise SweepBusy(
                f"{path.parent}: another rankscope driver is using this directory: "
                f"{other.describe()}; wait for it to finish, or stop it (kill {other.pid}) "
                "and rerun"
            )
        if _remove_stale(path, seen):
            took_over = other
    raise SweepBusy(f"{path}: other drivers keep taking this lock; rerun when they are done")


def _create(path: Path, text: str) -> bool:
    """Create the lock file with our text; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def _read(path: Path) -> tuple[str, Holder] | None:
    """The lock file's text and holder; None if it is gone; SweepBusy if it is garbled (after
    a few re-reads: its holder may be between creating and writing it)."""
    problem = ""
    for _ in range(_READ_TRIES):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            problem = str(e)
            break
        holder = _parse(text)
        if holder is not None:
            return text, holder
        problem = f"expected JSON with host, pid, started, command; found {text[:80]!r}"
        time.sleep(_READ_PAUSE_S)
    raise SweepBusy(
        f"{path}: unreadable lock file ({problem}); another rankscope driver may be using "
        f"{path.parent}: if none is, delete {path}"
    )


def _parse(text: str) -> Holder | None:
    try:
        d = json.loads(text)
        holder = Holder(d["host"], d["pid"], float(d["started"]), str(d.get("command", "?")))
    except (ValueError, KeyError, TypeError):
        return None
    ok = isinstance(holder.host, str) and holder.host and isinstance(holder.pid, int)
    return holder if ok and 0 < holder.pid < 2**31 else None


def _running(holder: Holder) -> bool:
    """Whether the lock's process (on this host) still runs: its pid exists, is no zombie and
    did not start after the lock was written (then the pid was reused, e.g. after a restart)."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    stat = _proc_stat(holder.pid)
    if stat is None:
        return True
    state, started = stat
    return state != "Z" and started <= holder.started + _PID_REUSE_SLACK_S


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """A process's state letter and start (unix time) from Linux's /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # fields 3, 22
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _remove_stale(path: Path, seen: str) -> bool:
    """Remove the lock judged stale if it is still that one. Takeovers happen one at a time,
    under `LOCK.takeover` (also O_EXCL): so a driver that read the same stale lock a moment
    later cannot delete the lock the first one has created since."""
    guard = path.with_name(f"{path.name}.takeover")
    for _ in range(_GUARD_TRIES):
        try:
            os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            time.sleep(_GUARD_PAUSE_S)
    else:
        raise SweepBusy(
            f"{guard}: left by a driver that stopped while taking over a stale lock; "
            f"if no rankscope driver is starting on {path.parent}, delete it"
        )
    try:
        if path.read_text(encoding="utf-8", errors="replace") != seen:
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        guard.unlink()
