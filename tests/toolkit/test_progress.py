"""Progress of long work: a tqdm bar (rate, ETA) on a terminal or in Jupyter, plain lines elsewhere."""

from __future__ import annotations

import io

from toolkit.progress import Progress, duration, interactive


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_rate_eta_and_the_given_figures():
    stream = Terminal()
    with Progress(4, "tiny", unit="step", stream=stream) as progress:
        assert progress.is_bar
        for _ in range(4):
            progress.update(1, loss="4.1")
        progress.write("[eval step 4] knn_top1 0.2")
    shown = stream.getvalue()
    assert "tiny: 100%" in shown and "4/4" in shown and "step/s" in shown and "loss=4.1" in shown
    assert "[eval step 4] knn_top1 0.2\n" in shown


def test_a_log_gets_plain_lines_and_no_bar():
    stream = io.StringIO()
    assert not interactive(stream)
    with Progress(100, "embedding", stream=stream, every_s=0.0) as progress:
        progress.update(40)
        progress.write("a line of its own")
        progress.update(60)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("embedding: 40/100 items (") and "items/s, ETA " in lines[0]
    assert lines[1:] == ["a line of its own"]  # nothing once done: the caller says what it did


def test_short_work_in_a_log_prints_nothing():
    stream = io.StringIO()
    with Progress(10, "features", stream=stream) as progress:
        progress.update(10)
    assert stream.getvalue() == ""


def test_durations_read_as_minutes_and_seconds_or_hours_and_minutes():
    assert (duration(65), duration(3725)) == ("1m05s", "1h02m")
