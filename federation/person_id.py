"""18-character resident identity numbers (GB 11643): validation and the ISO 7064 MOD 11-2 check character.

Layout: 6-digit region code, 8-digit birth date ``YYYYMMDD``, 3-digit sequence (odd for men, even for
women), one check character (``0``-``9`` or ``X``).

Identifiers never appear in an error message: :func:`validate_person_id` says what is wrong, not what
was given.

>>> check_char("11010519491231002")
'X'
>>> validate_person_id("11010519491231002x")
'11010519491231002X'
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hpf.federation.errors import ConfigError, PlanError
from hpf.federation.private_files import read_regular

WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_MAP = "10X98765432"  # indexed by (weighted sum mod 11)
EARLIEST_BIRTH = dt.date(1850, 1, 1)  # the standard's own example was born in 1880

_DIGITS17 = re.compile(r"[0-9]{17}")
_HINT = "an 18-character resident identity number: 17 digits, then a check digit or X"
_WEIGHT_ARRAY = np.array(WEIGHTS, dtype=np.int64)
_CHECK_BYTES = np.frombuffer(CHECK_MAP.encode("ascii"), dtype=np.uint8)


def check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits."""
    if not isinstance(first17, str) or not _DIGITS17.fullmatch(first17):
        raise ValueError("the check character needs exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_MAP[total % 11]


def _invalid(message: str) -> PlanError:
    return PlanError(message, code="PERSON_ID_INVALID", hint=_HINT)


def validate_person_id(pid: str) -> str:
    """Return the normalized identity number (surrounding spaces removed, upper-case X) or raise.

    Raises :class:`PlanError` with code ``PERSON_ID_INVALID``; the message names the defect, never the id.
    """
    if not isinstance(pid, str):
        raise _invalid("a person id must be a string")
    value = pid.strip().upper()
    if len(value) != 18:
        raise _invalid(f"a person id must be 18 characters long, not {len(value)}")
    if not _DIGITS17.fullmatch(value[:17]):
        raise _invalid("a person id's first 17 characters must be the digits 0-9")
    if value[17] not in "0123456789X":
        raise _invalid("a person id's last character must be a digit or X")
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise _invalid("a person id's characters 7-14 are not a valid birth date (YYYYMMDD)") from None
    if not EARLIEST_BIRTH <= born <= dt.date.today():
        raise _invalid("a person id's birth date (characters 7-14) is before 1850 or in the future")
    if check_char(value[:17]) != value[17]:
        raise _invalid("a person id's check character (the 18th) does not match the first 17 digits")
    return value


def is_valid_person_id(pid: object) -> bool:
    """True when :func:`validate_person_id` accepts ``pid``."""
    if not isinstance(pid, str):
        return False
    try:
        validate_person_id(pid)
    except PlanError:
        return False
    return True


def _digit_columns(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.int64]:
    """Split non-negative integers into ``width`` decimal digit columns, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % 10


def person_id_array(
    region_code: npt.ArrayLike, birth_yyyymmdd: npt.ArrayLike, sequence: npt.ArrayLike
) -> npt.NDArray[np.object_]:
    """Vectorized construction of identity numbers (an object array of ``str``).

    ``region_code`` is the 6-digit code as an integer, ``birth_yyyymmdd`` e.g. 19900131, ``sequence`` 0-999.
    The inputs are trusted (the synthetic generator); use :func:`validate_person_id` on anything else.

    >>> list(person_id_array([110105], [19491231], [2]))
    ['11010519491231002X']
    """
    code = np.asarray(region_code, dtype=np.int64)
    born = np.asarray(birth_yyyymmdd, dtype=np.int64)
    seq = np.asarray(sequence, dtype=np.int64)
    if not (code.shape == born.shape == seq.shape) or code.ndim != 1:
        raise ValueError("region_code, birth_yyyymmdd and sequence must be 1-d arrays of one length")
    if code.size and (code.min() < 0 or code.max() > 999_999 or seq.min() < 0 or seq.max() > 999):
        raise ValueError("region codes have 6 digits and sequences 3")
    digits = np.concatenate([_digit_columns(code, 6), _digit_columns(born, 8), _digit_columns(seq, 3)], axis=1)
    check = _CHECK_BYTES[(digits @ _WEIGHT_ARRAY) % 11]
    ascii_bytes = np.empty((len(code), 18), dtype=np.uint8)
    ascii_bytes[:, :17] = digits + ord("0")
    ascii_bytes[:, 17] = check
    raw = ascii_bytes.view("S18").ravel()
    return np.array([b.decode("ascii") for b in raw.tolist()], dtype=object)


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def packed_ids_valid(packed: bytes) -> bool:
    """Whether ``packed`` (identifiers of 18 ASCII characters, concatenated) holds only normalised, valid ones:
    the same rules as :func:`validate_person_id`, vectorised."""
    if len(packed) % 18:
        return False
    a = np.frombuffer(packed, dtype=np.uint8).reshape(-1, 18)
    if a.shape[0] == 0:
        return True
    d = a[:, :17].astype(np.int64) - ord("0")
    if not ((d >= 0) & (d <= 9)).all():
        return False
    if not (_CHECK_BYTES[(d @ _WEIGHT_ARRAY) % 11] == a[:, 17]).all():
        return False
    year = d[:, 6:10] @ np.array([1000, 100, 10, 1], dtype=np.int64)
    month = d[:, 10] * 10 + d[:, 11]
    day = d[:, 12] * 10 + d[:, 13]
    if not ((month >= 1) & (month <= 12)).all():
        return False
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    last = _DAYS_IN_MONTH[month] + ((month == 2) & leap)
    if not ((day >= 1) & (day <= last)).all():
        return False
    born = year * 10_000 + month * 100 + day
    today = dt.date.today()
    earliest = EARLIEST_BIRTH.year * 10_000 + EARLIEST_BIRTH.month * 100 + EARLIEST_BIRTH.day
    return bool(((born >= earliest) & (born <= today.year * 10_000 + today.month * 100 + today.day)).all())


MAX_PEOPLE_FILE_BYTES = 256 * 1024 * 1024  # a batch of a few hundred thousand people, consent tokens included
MAX_PEOPLE_FILE_ERRORS = 10  # bad lines named in one refusal


def read_people_file(
    path: Path, *, code: str, unreadable_code: str, nothing: str, column: str = "person_id"
) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """A CSV of people (screening applicants, people granted consent): its columns, rows (as written) and the
    normalised identifiers of its ``column``. A FIFO, a device or a file past its bound is refused unread
    (``unreadable_code``); a bad identifier is named by its line, never by its value, and then ``nothing`` (what
    was not done) is said; the file's other problems are ``code``."""
    try:
        text = read_regular(path, MAX_PEOPLE_FILE_BYTES).decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", code=unreadable_code) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", code=code) from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if column not in columns:
        raise ConfigError(f"{path}: no {column} column", code=code, hint="the first line names the columns")
    rows, ids, problems = [], [], []
    for row in reader:
        try:
            ids.append(validate_person_id(row.get(column) or ""))
        except PlanError as err:
            problems.append(f"line {reader.line_num}: {err.message}")
        rows.append(row)
    if problems:
        more = len(problems) - MAX_PEOPLE_FILE_ERRORS
        raise PlanError(
            f"{path}: {len(problems)} invalid identifier(s), {nothing}:\n  "
            + "\n  ".join(problems[:MAX_PEOPLE_FILE_ERRORS])
            + (f"\n  ... and {more} more" if more > 0 else ""),
            code="PERSON_ID_INVALID",
            hint=_HINT,
        )
    if not rows:
        raise ConfigError(f"{path}: no people", code=code)
    return columns, rows, ids
