"""labsupport.course.checks.Diagnosis: the shared check of every "diagnose" question."""
from __future__ import annotations

import pytest


def test_a_diagnosis_checks_shape_options_distinct_items_then_each_symptom():
    from labsupport.course.checks import Diagnosis, NotYet

    step = Diagnosis(name="diag", noun="partition", options=lambda: [0, 1, 2],
                     truth=lambda: {"hot": 1, "stuck": 2}, shows=lambda p: f"p{p} looks fine",
                     why={"hot": "Hot means fast end offsets.", "stuck": "Stuck means flat commits."},
                     same_for_two="Compare both columns.")
    step.run({"hot": 1, "stuck": 2})
    for answer, words in (([1, 2], "these keys"), ({"hot": 1}, "these keys"),
                          ({"hot": 7, "stuck": 2}, "not a partition"),
                          ({"hot": True, "stuck": 2}, "not a partition"),
                          ({"hot": 2, "stuck": 2}, "one partition for two symptoms"),
                          ({"hot": 0, "stuck": 2}, "hot: p0 looks fine. Hot means"),
                          ({"hot": 1, "stuck": 0}, "stuck: p0 looks fine. Stuck means")):
        with pytest.raises(NotYet, match=words):
            step.run(answer)
