"""Events survive the end of the process that tracked them: flush at exit, and a forked child."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.e2e.server_process import ROOT, ServerProcess
from tests.sdk.conftest import stored_events

EXIT_TIMEOUT_S = 30


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=EXIT_TIMEOUT_S, stdin=subprocess.DEVNULL)  # fmt: skip


def test_events_tracked_just_before_exit_are_sent_at_exit(pulse: ServerProcess, service: str) -> None:
    # flush_interval of an hour: nothing is sent before the interpreter exits, unless at exit
    done = _run(f"""
        from pulse_sdk import Client
        client = Client({pulse.url!r}, service_name={service!r}, flush_interval=3600)
        for n in range(5):
            client.track("last_words", {{"metadata": {{"n": n}}}})
        print(client.stats().queued)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"  # still queued when the script ended
    assert sorted(e["payload"]["metadata"]["n"] for e in stored_events(pulse, service)) == list(range(5))


def test_a_forked_child_sends_its_own_events_and_not_its_parents(pulse: ServerProcess, service: str) -> None:
    done = _run(f"""
        import os, sys
        from pulse_sdk import Client
        client = Client({pulse.url!r}, service_name={service!r}, flush_interval=3600)
        client.track("parent_before_fork")
        pid = os.fork()
        if pid == 0:  # the child: its first track starts its own sender
            client.track("child")
            delivered = client.flush(timeout=20)
            sys.exit(0 if delivered and client.stats().delivered == 1 else 3)  # the parent's queue is not its
        _, status = os.waitpid(pid, 0)
        client.track("parent_after_fork")
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    assert done.returncode == 0, done.stderr
    names = sorted(e["name"] for e in stored_events(pulse, service))
    assert names == ["child", "parent_after_fork", "parent_before_fork"]
