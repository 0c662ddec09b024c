"""Terminal output: results never carry a piece of a progress bar, ETAs ignore warm-up,
and a notebook gets a bar although its stderr is no terminal."""

import io
import sys
import time
import types

from headstart._console import Console, in_notebook


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so the console draws bars on it."""

    def isatty(self):
        return True


def test_a_result_printed_during_a_bar_is_a_clean_line():
    # One terminal shows both streams, as `headstart predict` in a shell does.
    screen = Terminal()
    console = Console(err=screen, out=screen)
    for i in console.progress(range(3), total=3, desc="predict"):
        console.result(f"photo_{i}.jpg\tants\t0.9450")
    # What a terminal leaves visible on each line: the text after its last carriage return.
    visible = [line.split("\r")[-1] for line in screen.getvalue().split("\n")]
    results = [line for line in visible if "photo" in line]
    assert results == [f"photo_{i}.jpg\tants\t0.9450" for i in range(3)], results
    assert "predict" in screen.getvalue()  # the bar was there, drawn around the results


def test_the_eta_ignores_the_first_items_warm_up(monkeypatch):
    err = Terminal()
    console = Console(err=err)
    bars = []
    import tqdm

    real = tqdm.tqdm

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(tqdm, "tqdm", spy)

    first_ready = []

    def items():
        time.sleep(0.2)  # the first batch: workers starting, a model's first call
        first_ready.append(time.time())
        yield 0
        yield from range(1, 5)

    for _ in console.progress(items(), total=100, desc="features"):
        pass
    bar = bars[0]
    # The clock restarted after the first item: the warm-up is not in the rate the ETA uses
    # (compared with when the first item was ready, not with a wall-clock bound a busy machine breaks).
    assert bar.n == 5
    assert bar.start_t >= first_ready[0]


def test_no_bar_when_quiet_or_piped():
    err = io.StringIO()
    assert list(Console(err=err).progress(range(3), total=3)) == [0, 1, 2]
    assert list(Console(0, err=Terminal()).progress(range(3), total=3)) == [0, 1, 2]
    assert err.getvalue() == ""


def test_a_jupyter_kernel_is_recognised(monkeypatch):
    assert not in_notebook()

    class ZMQInteractiveShell:  # what IPython's get_ipython() returns in a Jupyter kernel
        pass

    shell = ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert in_notebook()


def test_escape_sequences_in_names_reach_the_terminal_escaped():
    err, out = io.StringIO(), io.StringIO()
    console = Console(err=err, out=out)
    console.warn("skipping photos/\x1b[2Jcat\x1b]0;owned\x07.jpg: unreadable")
    console.result("a\tb\x9bc\rd")
    assert err.getvalue() == "headstart: warning: skipping photos/\\x1b[2Jcat\\x1b]0;owned\\x07.jpg: unreadable\n"
    assert out.getvalue() == "a\tb\\x9bc\\x0dd\n"  # tabs separate result columns and stay


def test_many_warnings_of_one_kind_are_counted_after_the_first_screenful():
    err = io.StringIO()
    Console(0, err=err).warn_each([f"skipping {i}.jpg: bad row" for i in range(1000)], "skipped.csv")
    lines = err.getvalue().splitlines()
    assert len(lines) == 21 and lines[0] == "headstart: warning: skipping 0.jpg: bad row"
    assert lines[-1] == "headstart: warning: ... and 980 more like these: skipped.csv lists them all"


def test_progress_without_a_terminal_is_a_line_now_and_then(monkeypatch):
    import headstart._console as console_module

    clock = iter(range(0, 1000, 10))  # every reading of the clock is 10 s after the last
    monkeypatch.setattr(console_module.time, "monotonic", lambda: next(clock))
    err = io.StringIO()
    console = Console(err=err)
    console.progress_every_s = 25
    assert list(console.progress(iter(range(8)), total=8, desc="features")) == list(range(8))
    assert err.getvalue().splitlines() == ["features: 3/8 (38%) after 30 s, about 50 s left",
                                           "features: 6/8 (75%) after 60 s, about 20 s left"]
