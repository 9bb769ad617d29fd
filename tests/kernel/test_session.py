"""Sessions: a jailed kernel keeps state between runs, streams typed events, obeys limits."""

import threading
import time
from pathlib import Path

from cogbox.images.store import Image
from cogbox.kernel.events import (
    Display,
    Error,
    Finished,
    InputRequest,
    KernelDied,
    OutputTruncated,
    Result,
    Stdout,
)
from cogbox.kernel.launch import HISTORY_BATCH_CELLS
from cogbox.kernel.session import DEFAULT_OUTPUT_LIMIT, Session, start_session
from tests.kernel.support import NO_REPLY_ONCE, run, small_policy, stderr_of, stdout_of


def test_one_plus_one_gives_a_result_and_finishes_ok(python_session: Session) -> None:
    events = run(python_session, "1 + 1")
    assert isinstance(events[-2], Result) and events[-2].data["text/plain"] == "2"
    assert isinstance(events[-1], Finished) and events[-1].status == "ok"


def test_variables_persist_between_runs(python_session: Session) -> None:
    run(python_session, "kept = 41")
    assert stdout_of(run(python_session, "print(kept + 1)")) == "42\n"


def test_stdout_and_stderr_are_separate_events(python_session: Session) -> None:
    events = run(python_session, "import sys; print('out'); print('err', file=sys.stderr)")
    assert (stdout_of(events), stderr_of(events)) == ("out\n", "err\n")


def test_output_of_c_code_on_fd_1_is_captured(python_session: Session) -> None:
    events = run(python_session, "import os; os.write(1, b'from fd 1\\n')")
    assert "from fd 1" in stdout_of(events)


def test_rich_display_output_is_a_display_event(python_session: Session) -> None:
    events = run(
        python_session, "from IPython.display import HTML, display\ndisplay(HTML('<b>x</b>'))"
    )
    displays = [e for e in events if isinstance(e, Display)]
    assert displays and displays[0].data["text/html"] == "<b>x</b>"


def test_uncaught_exception_gives_error_and_finished_error(python_session: Session) -> None:
    events = run(python_session, "raise ValueError('boom')")
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.ename, e.evalue) for e in errors] == [("ValueError", "boom")]
    assert isinstance(events[-1], Finished) and events[-1].status == "error"


def test_a_run_right_after_an_abandoned_one_is_never_aborted(python_session: Session) -> None:
    # Each run is its own request. With ipykernel's stop_on_error, the KeyboardInterrupt of
    # a run whose follower left (a shell's Ctrl-C) aborted the next run when it reached the
    # kernel before the "stop aborting" marker ipykernel posts after an error.
    statuses = []
    for _ in range(12):
        events = python_session.execute("print('looping', flush=True)\nwhile True: pass")
        for event in events:
            if isinstance(event, Stdout):
                break
        python_session.interrupt()
        events.close()
        statuses.append(run(python_session, "pass")[-1])
    assert [e.status for e in statuses if isinstance(e, Finished)] == ["ok"] * 12, statuses


def test_input_is_answered_by_on_input(python_session: Session) -> None:
    events = run(
        python_session, "name = input('name? '); print('hi', name)", on_input=lambda r: "bob"
    )
    assert InputRequest("name? ", False) in events
    assert stdout_of(events) == "hi bob\n"


def test_input_is_answered_by_send_input(python_session: Session) -> None:
    output = []
    for event in python_session.execute("print('hi', input('name? '))"):
        if isinstance(event, InputRequest):
            python_session.send_input("alice")
        output.append(event)
    assert stdout_of(output) == "hi alice\n"


def test_interrupt_stops_a_busy_loop_and_the_kernel_lives(python_session: Session) -> None:
    timer = threading.Timer(0.5, python_session.interrupt)
    timer.start()
    started = time.monotonic()
    events = run(python_session, "while True: pass")
    took = time.monotonic() - started
    timer.join()
    assert took < 2.5  # 0.5 s before the interrupt, then under 2 s to stop
    assert any(isinstance(e, Error) and e.ename == "KeyboardInterrupt" for e in events)
    assert stdout_of(run(python_session, "print(kept)")) == "41\n"


def test_an_interrupt_that_overtakes_its_run_is_held_until_the_code_begins(
    python_session: Session,
) -> None:
    # Sent before the execute request even leaves: an idle kernel ignores SIGINT, so an
    # interrupt signalled at once would be lost and the loop would run on (the runs of a
    # loaded service hit this window).
    events = python_session.execute("while True: pass", timeout=30)
    python_session.interrupt()
    seen = list(events)
    assert any(isinstance(e, Error) and e.ename == "KeyboardInterrupt" for e in seen), seen
    assert isinstance(seen[-1], Finished) and seen[-1].status == "error", seen
    assert stdout_of(run(python_session, "print('alive')")) == "alive\n"


def test_a_request_the_kernel_ends_without_a_reply_ends_the_run(python_session: Session) -> None:
    run(python_session, "kept_too = 5")
    run(python_session, NO_REPLY_ONCE)
    started = time.monotonic()
    events = run(python_session, "print('never')", timeout=30)
    took = time.monotonic() - started
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status == "error", events
    assert "without a reply" in finished.message
    assert took < 10  # not the time limit: the grace after its idle status
    assert stdout_of(run(python_session, "print(kept_too)")) == "5\n"  # the same kernel


def test_time_limit_interrupts_the_run_and_keeps_the_session(python_session: Session) -> None:
    started = time.monotonic()
    events = run(python_session, "import time; time.sleep(30)", timeout=1)
    assert time.monotonic() - started < 3
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status == "timeout"
    assert "time limit of 1 s" in finished.message
    assert stdout_of(run(python_session, "print(kept)")) == "41\n"


def test_output_flood_is_capped_with_one_notice(python_session: Session) -> None:
    events = run(python_session, "for _ in range(20): print('y' * 100_000)\nprint('done')")
    assert len(stdout_of(events)) == DEFAULT_OUTPUT_LIMIT
    notices = [e for e in events if isinstance(e, OutputTruncated)]
    assert len(notices) == 1 and "524,288 characters" in notices[0].message
    assert isinstance(events[-1], Finished) and events[-1].status == "ok"


def test_completion_uses_the_live_namespace(python_session: Session) -> None:
    run(python_session, "unusual_name_42 = 1")
    completion = python_session.complete("unusual_na")
    assert completion.matches == ["unusual_name_42"]
    assert (completion.cursor_start, completion.cursor_end) == (0, 10)


def test_restart_clears_variables_but_keeps_home_files(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as session:
        run(session, "x = 1\nopen('/home/work/kept.txt', 'w').write('still here')")
        session.restart()
        events = run(session, "print(open('/home/work/kept.txt').read())\nx")
        assert stdout_of(events) == "still here\n"
        assert any(isinstance(e, Error) and e.ename == "NameError" for e in events)


def test_history_is_written_in_batches_and_kept_through_a_restart(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as session:
        asked = "print(get_ipython().history_manager.db_cache_size)"
        assert stdout_of(run(session, asked)) == f"{HISTORY_BATCH_CELLS}\n"
        run(session, "history_marker = 1")
        session.restart()  # a kernel that ends writes what it kept
        found = "print([s for _, _, s in get_ipython().history_manager.search('history_marker*')])"
        assert stdout_of(run(session, found)) == "['history_marker = 1']\n"


def test_the_kernel_is_reached_over_ipc_sockets_in_the_sessions_own_folder(
    python_image: Image,
) -> None:
    with (
        start_session(python_image, small_policy()) as session,
        start_session(python_image, small_policy()) as other,
    ):
        info, others = session.connection_info(), other.connection_info()
        sockets = sorted(p.name for p in Path(str(info["ip"])).parent.iterdir() if p.is_socket())
        assert info["transport"] == "ipc" and info["key"] != others["key"]
        assert Path(str(info["ip"])).parent != Path(str(others["ip"])).parent
        assert len(sockets) == 5, sockets  # shell, iopub, stdin, control, heartbeat
        assert stdout_of(run(session, "print('over ipc')")) == "over ipc\n"


def test_given_workdir_is_the_sessions_home(python_image: Image, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the host")
    with start_session(python_image, small_policy(), tmp_path) as session:
        events = run(session, "print(open('/home/work/data.txt').read())")
    assert stdout_of(events) == "from the host\n"


def test_out_of_memory_is_reported_as_kernel_died_oom(python_image: Image) -> None:
    with start_session(python_image, small_policy("256m")) as session:
        started = time.monotonic()
        events = run(session, "hog = b'x' * (1 << 30)")
        assert time.monotonic() - started < 5
        died = events[-1]
        assert isinstance(died, KernelDied) and died.reason == "oom"
        assert "memory limit 256 MiB" in died.message
        session.restart()
        assert stdout_of(run(session, "print('back')")) == "back\n"


def test_a_segfault_is_reported_as_a_crash_in_words(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as session:
        died = run(session, "import ctypes; ctypes.string_at(0)")[-1]
        assert isinstance(died, KernelDied) and died.reason == "crashed"
        assert died.message == "crashed: segmentation fault (signal 11, SIGSEGV)"
        assert not session.alive


def test_run_that_ignores_interrupts_restarts_the_kernel_at_time_limit(
    python_image: Image,
) -> None:
    stubborn = (
        "import time\nwhile True:\n    try: time.sleep(1)\n    except KeyboardInterrupt: pass"
    )
    with start_session(python_image, small_policy()) as session:
        events = run(session, stubborn, timeout=0.5)
        finished = events[-1]
        assert isinstance(finished, Finished) and finished.status == "timeout"
        assert "kernel was restarted" in finished.message
        assert stdout_of(run(session, "print('fresh')")) == "fresh\n"


def test_events_serialise_with_their_kind() -> None:
    from cogbox.kernel.events import event_to_dict

    assert event_to_dict(Stdout("hi")) == {"kind": "stdout", "text": "hi"}
    assert event_to_dict(Finished("ok", 3)) == {
        "kind": "finished",
        "status": "ok",
        "execution_count": 3,
        "message": "",
        "exit_code": None,
    }
