"""Step lines printed from side-by-side threads (the clv stage judges its origins at once)."""

import re
import sys
import threading

from custseg.runtime.summary import StageSummary

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[clv\]   thread \d step \d+")


def test_steps_printed_from_threads_stay_whole_lines(capsys):
    summary = StageSummary("clv")
    threads = [threading.Thread(target=lambda t=t: [summary.step(f"thread {t} step {i}")
                                                    for i in range(300)]) for t in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 * 300
    assert [line for line in lines if not LINE.fullmatch(line)] == []
