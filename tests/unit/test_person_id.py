"""Resident identity numbers: the MOD 11-2 check character, validation, and errors that never echo the id."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from examples import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from hpf.federation.errors import ConfigError, PlanError
from hpf.federation.person_id import (
    check_char,
    is_valid_person_id,
    packed_ids_valid,
    person_id_array,
    validate_person_id,
)

# Worked by hand from the definition: sum of digit * weight (7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2), mod 11,
# then the map 0->1, 1->0, 2->X, 3->9, 4->8, 5->7, 6->6, 7->5, 8->4, 9->3, 10->2.
#   110105 19491231 002: 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167; 167 mod 11 = 2 -> 'X'
#   440524 18800101 001: 28+36+0+25+16+16+2+8+48+0+0+9+0+5+0+0+2 = 195; 195 mod 11 = 8 -> '4'
#   310000 19900101 123: 21+9+0+0+0+0+2+9+54+0+0+9+0+5+8+8+6 = 131; 131 mod 11 = 10 -> '2'
HAND_WORKED = [
    ("11010519491231002", "X"),
    ("44052418800101001", "4"),
    ("31000019900101123", "2"),
]

codes = st.integers(min_value=110000, max_value=659999)
birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31))
sequences = st.integers(min_value=0, max_value=999)


def _first17(code: int, born: dt.date, seq: int) -> str:
    return f"{code:06d}{born:%Y%m%d}{seq:03d}"


@pytest.mark.parametrize(("first17", "expected"), HAND_WORKED)
def test_check_char_matches_hand_worked_examples(first17: str, expected: str) -> None:
    assert check_char(first17) == expected
    assert validate_person_id(first17 + expected) == first17 + expected


@pytest.mark.parametrize("bad", ["", "1234567890123456", "123456789012345678", "1101051949123100A", 17])
def test_check_char_needs_17_digits(bad: object) -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        check_char(bad)  # type: ignore[arg-type]


@given(codes, birth_dates, sequences)
def test_round_trip(code: int, born: dt.date, seq: int) -> None:
    first17 = _first17(code, born, seq)
    pid = first17 + check_char(first17)
    assert validate_person_id(pid) == pid
    assert validate_person_id(f" {pid.lower()} ") == pid  # surrounding spaces and a lower-case x
    assert is_valid_person_id(pid)


@given(codes, birth_dates, sequences, st.sampled_from("0123456789X"))
def test_any_other_check_char_is_rejected(code: int, born: dt.date, seq: int, last: str) -> None:
    first17 = _first17(code, born, seq)
    pid = first17 + last
    assert is_valid_person_id(pid) == (last == check_char(first17))


@given(st.lists(st.tuples(codes, birth_dates, sequences), min_size=1, max_size=20))
def test_vectorized_ids_equal_the_scalar_ones(items: list[tuple[int, dt.date, int]]) -> None:
    code = np.array([c for c, _, _ in items])
    born = np.array([int(f"{b:%Y%m%d}") for _, b, _ in items])
    seq = np.array([s for _, _, s in items])
    expected = [_first17(c, b, s) + check_char(_first17(c, b, s)) for c, b, s in items]
    assert person_id_array(code, born, seq).tolist() == expected


VALID = "11010519491231002X"
INVALID = [
    (VALID[:-1], "18 characters long, not 17"),
    (VALID + "1", "18 characters long, not 19"),
    ("1101051949A231002X", "first 17 characters must be the digits"),
    ("11010519491231002\uff18", "last character must be a digit or X"),
    ("1101051949123100２X", "first 17 characters must be the digits"),  # a full-width digit
    ("110105194902310026", "not a valid birth date"),  # 31 February
    ("110105184912310021", "before 1850 or in the future"),
    ("110105209912310021", "before 1850 or in the future"),
    ("110105194912310021", "check character (the 18th) does not match"),
]


@pytest.mark.parametrize(("pid", "reason"), INVALID)
def test_invalid_ids_say_why_without_echoing(pid: str, reason: str) -> None:
    with pytest.raises(PlanError) as info:
        validate_person_id(pid)
    err = info.value
    assert err.code == "PERSON_ID_INVALID"
    assert reason in err.message
    for text in (str(err), err.message, err.hint or "", repr(err)):
        assert pid not in text
        assert pid[:14] not in text  # not even the region and birth date
    assert not is_valid_person_id(pid)


def test_non_strings_are_invalid() -> None:
    with pytest.raises(PlanError, match="must be a string"):
        validate_person_id(110105194912310021)  # type: ignore[arg-type]
    assert not is_valid_person_id(None)
    assert not is_valid_person_id(b"11010519491231002X")


def test_vectorized_ids_reject_out_of_range_parts() -> None:
    with pytest.raises(ValueError):
        person_id_array([1_000_000], [19900101], [1])
    with pytest.raises(ValueError):
        person_id_array([310000], [19900101], [1000])


@st.composite
def near_valid_ids(draw: st.DrawFn) -> str:
    """Identifiers built valid (birth dates from 1840 to 2040), then perhaps one character replaced."""
    born = draw(st.dates(min_value=dt.date(1840, 1, 1), max_value=dt.date(2040, 12, 31)))
    first = f"{draw(st.integers(0, 999_999)):06d}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    pid = first + check_char(first)
    if draw(st.booleans()):
        at = draw(st.integers(0, 17))
        pid = pid[:at] + draw(st.sampled_from("0123456789Xx /")) + pid[at + 1 :]
    return pid


@settings(max_examples=budget(500), deadline=None)
@given(st.lists(near_valid_ids(), min_size=1, max_size=4))
def test_the_vectorised_check_agrees_with_validate_person_id(ids: list[str]) -> None:
    packed = "".join(ids).encode("ascii")
    assert packed_ids_valid(packed) == all(is_valid_person_id(p) and validate_person_id(p) == p for p in ids)


def test_a_people_file_is_read_once_for_screening_and_granting_alike(tmp_path: Path) -> None:
    """The one reader of a people CSV: identifiers normalised, a bad one named by its line and never by its value,
    a missing column or an empty file refused by the caller's code, a FIFO refused unread (never waited on)."""
    from hpf.federation.person_id import read_people_file

    good = "11010519491231002x"
    path = tmp_path / "people.csv"
    path.write_text(f"ref,person_id\nR1,{good}\n")
    args = {"code": "X_INVALID", "unreadable_code": "X_UNREADABLE", "nothing": "nothing was done"}
    columns, rows, ids = read_people_file(path, **args)
    assert columns == ["ref", "person_id"] and rows == [{"ref": "R1", "person_id": good}] and ids == [good.upper()]
    path.write_text(f"ref,person_id\nR1,{good}\nR2,{good[:-1]}7\n")
    with pytest.raises(PlanError) as bad:
        read_people_file(path, **args)
    assert bad.value.code == "PERSON_ID_INVALID" and "line 3:" in bad.value.message
    assert "nothing was done" in bad.value.message and good[:17] not in str(bad.value)
    for text, code in (("ref,id\nR1,x\n", "X_INVALID"), ("ref,person_id\n", "X_INVALID")):
        path.write_text(text)
        with pytest.raises(ConfigError) as refused:
            read_people_file(path, **args)
        assert refused.value.code == code
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as unread:
        read_people_file(fifo, **args)
    assert unread.value.code == "X_UNREADABLE"
