"""Naming a job process's death from its exit status and its log, on real crashes of real processes."""

import signal
import subprocess
import sys

import pytest

from engine.jobs.crash_report import crash_excerpt, describe_death

# Each dies as a job process can: faulthandler on (as in run_job), then a native fault.
CRASHES = {
    "segfault": "import ctypes, faulthandler; faulthandler.enable(); ctypes.string_at(0)",
    "abort": "import faulthandler, os, sys; faulthandler.enable(); "
             "print('free(): invalid pointer', file=sys.stderr, flush=True); os.abort()",
}


def crash(kind: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", CRASHES[kind]], capture_output=True, text=True, timeout=60)
    # As in a job log: our own records come first; one mentions memory corruption, and is not the crash.
    ours = "2026-12-01 21:11:48,750 INFO engine.cpu: oneDNN: ... kernels corrupt memory; AVX2 kernels do not\n"
    return done.returncode, ours + "Epoch 1/20\n" + done.stderr


def test_a_segfault_is_named_from_the_exit_status_or_from_the_log_alone():
    code, log = crash("segfault")
    assert code == -signal.SIGSEGV
    assert describe_death(code, log) == "the job process crashed (SIGSEGV)"
    assert describe_death(None, log) == "the job process crashed (SIGSEGV)"  # a reaper that did not start it


def test_an_abort_carries_the_c_librarys_message():
    code, log = crash("abort")
    assert code == -signal.SIGABRT
    expected = "the job process crashed (SIGABRT): free(): invalid pointer"
    assert describe_death(code, log) == expected
    assert describe_death(None, log) == expected


@pytest.mark.parametrize("log, oom, expected", [
    ("Epoch 3/20\n", False, "the job process was killed (SIGKILL)"),
    ("Epoch 3/20\n", True, "the job process ran out of memory (killed by the kernel, SIGKILL)"),
    ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor\n", False,
     "the job process ran out of memory (killed by the kernel, SIGKILL)"),
])
def test_sigkill_is_out_of_memory_only_when_the_kernel_or_the_log_says_so(log, oom, expected):
    assert describe_death(-signal.SIGKILL, log, oom_killed=oom) == expected


def test_an_exit_without_reporting():
    assert describe_death(3, "Epoch 1/2\n") == "the job process exited with status 3 without reporting"
    assert "without reporting" in describe_death(None, "Epoch 1/2\n")
    assert describe_death(None, "MemoryError\n") == "the job process ran out of memory"


def test_the_stored_excerpt_starts_at_the_crash_not_in_the_stacks_after_it():
    code, log = crash("abort")
    log = "\n".join(f"2026-12-01 INFO line {i}" for i in range(50)) + "\n" + log + "\n  File x\n" * 40
    excerpt = crash_excerpt(log, 30)
    assert excerpt.splitlines()[2] == "free(): invalid pointer" and "Fatal Python error: Aborted" in excerpt
    assert crash_excerpt("a\nb\nc\n", 2) == "b\nc"
