"""The planted-bug list (``make planted``) stays in step with the code it plants into."""

import pytest
from planted_bugs import BUGS, ROOT


@pytest.mark.parametrize("number", range(len(BUGS)))
def test_each_planted_bug_replaces_one_line_the_code_still_has(number):
    bug = BUGS[number]
    text = (ROOT / "src/seglab" / bug.module).read_text()
    assert text.count(bug.original) == 1, f"bug {number} is stale: update tests/planted_bugs.py"
    assert bug.planted != bug.original
    assert all((ROOT / test).is_file() for test in bug.tests)
