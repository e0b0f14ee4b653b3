"""The one-line trainer state that `gristmill status` prints."""

from streams.cli.stack import trainer_line


def test_trainer_line_shows_phase_progress_and_eta() -> None:
    line = trainer_line({"state": "training", "attempt": 1, "pid": 42,
                         "progress": {"phase": "fine-tune", "step": 4, "steps": 7, "done": 30, "total": 120,
                                      "unit": "steps", "eta_s": 95.4},
                         "last": None})
    assert line == "trainer training (attempt 1, pid 42): fine-tune (phase 4/7) 30/120 steps, ETA 95s"


def test_trainer_line_shows_what_it_waits_for_and_the_last_run() -> None:
    line = trainer_line({"state": "waiting", "waiting_for": "rollout of v3", "progress": None,
                         "last": {"version": "v2", "status": "rejected", "reason": "no gain"}})
    assert line == "trainer waiting for rollout of v3; last: v2 rejected no gain"
