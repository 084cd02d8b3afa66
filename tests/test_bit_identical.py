"""The bit-identity guard rail (``experiments/measure/bit_identical.py``) is deterministic
and its comparison notices a changed digest."""

from __future__ import annotations

from experiments.measure import bit_identical

ENTRIES = ["softmax[shifted]", "cross_entropy", "maxout[pool=4]"]
CASES = ["normal_8x128", "nonfinite_8x52", "length1_4x1"]


def test_fingerprints_are_deterministic_and_compare_sees_a_change():
    first = bit_identical.fingerprints(entries=ENTRIES, cases=CASES)
    second = bit_identical.fingerprints(entries=ENTRIES, cases=CASES)
    assert first == second
    # maxout's pool of 4 does not divide rows of 1: those cells are left out.
    # entries x cases x dtypes x (3 engines + their inputs)
    expected = 2 * 3 * 2 * 4 + 1 * 2 * 2 * 4
    assert len(first) == expected
    assert not [k for k, v in first.items() if v.startswith("error:")]
    # cross_entropy returns (loss, gradient): two digests.
    assert first["cross_entropy|cpu|float64|normal_8x128"].count(";") == 1

    same = bit_identical.compare(first, second)
    assert same.compared == len(first) == len(same.identical)
    assert not (same.differing or same.only_before or same.only_after)

    changed = dict(second)
    key = "softmax[shifted]|parallel|float32|nonfinite_8x52"
    changed[key] = "0" * 64
    dropped = "maxout[pool=4]|numpy|float64|normal_8x128"
    del changed[dropped]
    result = bit_identical.compare(first, changed)
    assert result.differing == [key]
    assert result.only_before == [dropped]
    assert result.only_after == []
    assert result.compared == len(first) - 1


def test_compare_command_exits_1_on_a_difference(tmp_path, capsys):
    import json

    before = {"a|cpu|float32|c": "1", "b|cpu|float32|c": "error:ValueError"}
    paths = []
    for name, cells in (("a", before), ("b", before | {"a|cpu|float32|c": "2"})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"meta": {}, "fingerprints": cells}))
    assert bit_identical.main(["compare", str(paths[0]), str(paths[0])]) == 0
    assert bit_identical.main(["compare", *map(str, paths)]) == 1
    out = capsys.readouterr().out
    assert "cells compared: 2, identical: 1, differing: 1" in out
    assert "differs: a|cpu|float32|c" in out
