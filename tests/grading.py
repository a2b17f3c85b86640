"""One helper for the exercise tests (test_exercises, test_exercises_experts): a wrong
answer must fail the check with a hint that names its mistake."""

import esmm_np.exercises as ex


def fails_with(name, fn, capsys, *hint_words):
    """Check ``fn`` as exercise ``name``; assert it fails and its hints hold every word.

    Returns the printed report.
    """
    ok = ex.check(name, fn)
    out = capsys.readouterr().out
    assert not ok, out
    assert "FAIL" in out
    hints = [line for line in out.splitlines() if line.strip().startswith("hint:")]
    assert hints, out
    for word in hint_words:
        assert any(word in h for h in hints), (word, hints)
    return out
