"""Why a job process died without reporting: a crash, a kill, or memory, read from its exit and its log.

A job process enables `faulthandler`, so a native crash leaves "Fatal Python error:
Aborted" (or "Segmentation fault", ...) in its log, usually right after the C library's
own message ("free(): invalid pointer"). The process that started the job also knows its
exit status (minus the signal number); any other process has only the log to go on.
"""

from __future__ import annotations

import os
import re
import signal

# faulthandler's names for the signals it catches.
_FAULT_SIGNALS = {"Segmentation fault": signal.SIGSEGV, "Aborted": signal.SIGABRT, "Bus error": signal.SIGBUS,
                  "Floating-point exception": signal.SIGFPE, "Floating point exception": signal.SIGFPE,
                  "Illegal instruction": signal.SIGILL}
_FAULT_LINE = re.compile(r"^Fatal Python error: (" + "|".join(map(re.escape, _FAULT_SIGNALS)) + r")\s*$")
# What the C and C++ runtimes (and TensorFlow's fatal checks) print just before they abort.
_LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")  # our own logging's lines
_NATIVE_MESSAGE = re.compile(r"\w+\(\): .*|.*(corrupt|double free|Check failed|terminate called|what\(\):).*")
_OUT_OF_MEMORY = re.compile(r"MemoryError|ResourceExhaustedError|OOM when allocating|std::bad_alloc|Out of memory")


def describe_death(exit_code: int | None, log_tail: str, *, oom_killed: bool = False) -> str:
    """One line for the run's error, naming what happened.

    Args:
        exit_code: the process's exit status as `subprocess` gives it (a negative number is
            the signal that ended it), or None when this process did not start the job.
        log_tail: the last lines of the job's log.
        oom_killed: the kernel recorded killing this process for lack of memory.

    Returns:
        e.g. "the job process crashed (SIGABRT): free(): invalid pointer".
    """
    lines = [line.rstrip() for line in log_tail.splitlines()]
    fault_at = _fault_line(lines)
    sig = _signal(exit_code)
    if sig is None and fault_at is not None:
        sig = _FAULT_SIGNALS[_FAULT_LINE.match(lines[fault_at]).group(1)]
    if sig == signal.SIGKILL:
        if oom_killed or _OUT_OF_MEMORY.search(log_tail):
            return "the job process ran out of memory (killed by the kernel, SIGKILL)"
        return "the job process was killed (SIGKILL)"
    if sig is not None:
        detail = _native_message(lines[:fault_at] if fault_at is not None else lines)
        return f"the job process crashed ({sig.name})" + (f": {detail}" if detail else "")
    if _OUT_OF_MEMORY.search(log_tail):
        return "the job process ran out of memory"
    if exit_code is not None:
        return f"the job process exited with status {exit_code} without reporting"
    return "the job process ended without reporting (its exit status is known only where it was started)"


def crash_excerpt(log_tail: str, lines: int = 30) -> str:
    """The end of a job's log to store with its failure: from the native crash on, if there was one."""
    text = log_tail.splitlines()
    fault_at = _fault_line(text)
    start = max(0, len(text) - lines) if fault_at is None else max(0, fault_at - 3)
    return "\n".join(text[start:start + max(lines, 80)])


def _fault_line(lines: list[str]) -> int | None:
    return next((i for i in range(len(lines) - 1, -1, -1) if _FAULT_LINE.match(lines[i].rstrip())), None)


def oom_killed(pid: int) -> bool:
    """True if the kernel log (readable by root) records an OOM kill of `pid`."""
    try:
        with open("/dev/kmsg", "rb", buffering=0) as kmsg:
            os.set_blocking(kmsg.fileno(), False)
            needle = re.compile(rb"(Killed process|oom-kill:.*pid=)\s*%d\b" % pid)
            while True:
                try:
                    record = kmsg.read(8192)
                except BlockingIOError:
                    return False
                if not record:
                    return False
                if needle.search(record):
                    return True
    except OSError:
        return False


def _signal(exit_code: int | None) -> signal.Signals | None:
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code)
    except ValueError:
        return None


def _native_message(lines: list[str]) -> str:
    """The C library's last message before the fault, e.g. `double free or corruption (!prev)`."""
    for line in reversed(lines[-8:]):
        if _NATIVE_MESSAGE.fullmatch(line.strip()) and not _LOG_RECORD.match(line):
            return line.strip()[:200]
    return ""
