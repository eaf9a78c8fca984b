"""Compiled byte scanners behind :func:`ndr_jobs.parsing.panos.parse_arrow` (numba): one pass per line, no Python
per row.

Each function reads the UTF-8 bytes of a batch of lines (the Arrow data buffer) and answers for every line at
once; :mod:`ndr_jobs.parsing.panos` turns the answers into Arrow columns and applies its rules. The checks here are
exact translations of the reference parser's (``INT_RE``/``PORT_RE``, the IPv4 part of ``IP_RE``, both time
formats with ``strptime``'s and ``fromisoformat``'s ranges); what they cannot settle (IPv6 addresses, times
near the ends of ``datetime``'s range, anything odd) they report as undecided, and the caller decides those few
values with the reference rules.

Compiled code is cached on disk (``cache=True``): a Spark worker compiles once per machine, then loads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

COMMA, QUOTE, BRACE = 44, 34, 123
#: :func:`times` states
TIME_EMPTY, TIME_OK, TIME_BAD, TIME_OTHER = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def scan_lines(data, starts, ends, positions, width):  # type: ignore[no-untyped-def]
    """The comma layout of each line, and where fields ``positions`` (ascending, each < ``width``) are.

    Returns ``(n_commas, plain_prefix, plain, rest_quotes, field_start, field_length)``: per line, its number of
    commas; whether it has at least ``width`` commas and no quote or brace before its ``width``-th comma;
    whether that holds or it has no quote or brace at all; the quotes after its ``width``-th comma; and for
    each position (rows of the last two arrays), the field's first byte and length (0 when it is empty or missing).
    A line with a quote or brace before its ``width``-th comma is not plain, and the scan stops there: its
    other answers are meaningless (the caller parses it with the reference parser).
    """
    n = len(starts)
    k = len(positions)
    n_commas = np.zeros(n, np.int64)
    plain_prefix = np.zeros(n, np.bool_)
    plain = np.zeros(n, np.bool_)
    rest_quotes = np.zeros(n, np.int64)
    field_start = np.zeros((k, n), np.int64)
    field_length = np.zeros((k, n), np.int64)
    for i in range(n):
        start, end = starts[i], ends[i]
        commas = 0
        field_begin = start
        j = 0  # the next wanted position
        at = start
        special = False
        while at < end:  # fields 0..width-1: commas and fields, until a quote or a brace
            b = data[at]
            if b == COMMA:
                if j < k and positions[j] == commas:
                    field_start[j, i] = field_begin
                    field_length[j, i] = at - field_begin
                    j += 1
                commas += 1
                field_begin = at + 1
                if commas == width:
                    break
            elif b == QUOTE or b == BRACE:  # noqa: SIM109 (a tuple test is slower in compiled code)
                special = True
                break
            at += 1
        if special:
            continue
        n_commas[i] = commas
        plain[i] = True
        if commas == width:  # fields width.. only matter by their quotes
            plain_prefix[i] = True
            quotes = 0
            for rest in range(at + 1, end):
                quotes += data[rest] == QUOTE
            rest_quotes[i] = quotes
        elif j < k and positions[j] == commas:  # the last field ends at the line's end
            field_start[j, i] = field_begin
            field_length[j, i] = end - field_begin
    return n_commas, plain_prefix, plain, rest_quotes, field_start, field_length


@njit(cache=True, nogil=True)
def unsigned_integers(data, start, length, max_digits):  # type: ignore[no-untyped-def]
    """``(value, ok)`` of each field read as 1..``max_digits`` ASCII digits (``ok`` false otherwise)."""
    n = len(start)
    value = np.zeros(n, np.int64)
    ok = np.zeros(n, np.bool_)
    for i in range(n):
        if 1 <= length[i] <= max_digits:
            value[i] = _digits(data, start[i], length[i])
            ok[i] = value[i] >= 0
    return value, ok


@njit(cache=True, nogil=True)
def ipv4(data, start, length):  # type: ignore[no-untyped-def]
    """Per field: is it a dotted-quad IPv4 address as ``IP_RE`` spells one (octets 0..255, no leading zero)?"""
    n = len(start)
    ok = np.zeros(n, np.bool_)
    for i in range(n):
        at, end = start[i], start[i] + length[i]
        octets = 0
        good = True
        while good:
            digits = 0
            v = 0
            first = 0
            while at < end and 48 <= data[at] <= 57 and digits < 4:
                if digits == 0:
                    first = data[at]
                v = v * 10 + data[at] - 48
                digits += 1
                at += 1
            if digits == 0 or digits > 3 or v > 255 or (digits > 1 and first == 48):
                good = False
                break
            octets += 1
            if octets == 4:
                good = at == end
                break
            if at < end and data[at] == 46:
                at += 1
            else:
                good = False
        ok[i] = good and octets == 4
    return ok


@njit(cache=True, nogil=True)
def _days_from_civil(y, m, d):  # type: ignore[no-untyped-def]
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    y = y - 1 if m <= 2 else y
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, nogil=True)
def _digits(data, at, count):  # type: ignore[no-untyped-def]
    """The value of ``count`` ASCII digits at ``at``, or -1 if one is not a digit."""
    v = 0
    for p in range(at, at + count):
        d = data[p] - 48
        if d < 0 or d > 9:
            return -1
        v = v * 10 + d
    return v


@njit(cache=True, nogil=True)
def _fraction_and_offset(data, at, end):  # type: ignore[no-untyped-def]
    """``(microseconds, offset_seconds, ok)`` of an ISO time's tail ``[at, end)``: ``.f{1,9}`` (truncated to
    microseconds), then nothing, ``Z`` or ``+HH:MM``/``-HH:MM`` with HH <= 23 and MM <= 59."""
    micros = 0
    if at < end and data[at] == 46:  # '.'
        at += 1
        n = 0
        while at < end and 48 <= data[at] <= 57:
            if n < 6:
                micros = micros * 10 + data[at] - 48
            n += 1
            at += 1
        if n < 1 or n > 9:
            return 0, 0, False
        for _ in range(n, 6):
            micros *= 10
    if at == end:
        return micros, 0, True
    if data[at] == 90:  # 'Z'
        return micros, 0, at + 1 == end
    if end - at != 6 or data[at + 3] != 58 or (data[at] != 43 and data[at] != 45):
        return 0, 0, False
    hours, minutes = _digits(data, at + 1, 2), _digits(data, at + 4, 2)
    if hours < 0 or minutes < 0 or hours > 23 or minutes > 59:
        return 0, 0, False
    offset = hours * 3600 + minutes * 60
    return micros, -offset if data[at] == 45 else offset, True


@njit(cache=True, nogil=True)
def times(data, start, length):  # type: ignore[no-untyped-def]
    """``(epoch_micros, state)`` per field, for the values that are certain: ``YYYY/MM/DD HH:MM:SS`` (UTC; as
    ``strptime`` then ``datetime``) and ``YYYY-MM-DDTHH:MM:SS[.f][Z|+HH:MM]`` (as ``fromisoformat``, in UTC).

    State :data:`TIME_EMPTY` (no value), :data:`TIME_OK`, :data:`TIME_BAD` (the legacy shape, out of range) or
    :data:`TIME_OTHER`: any other value, including ISO times out of range or of years 1 and 9999 (where the
    offset may leave ``datetime``'s range), which the caller decides with the reference parser.
    """
    n = len(start)
    micros = np.zeros(n, np.int64)
    state = np.zeros(n, np.int8)
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    for i in range(n):
        size = length[i]
        if size == 0:
            continue
        state[i] = TIME_OTHER
        at = start[i]
        if size < 19 or data[at + 13] != 58 or data[at + 16] != 58:
            continue
        legacy = size == 19 and data[at + 4] == 47 and data[at + 7] == 47 and data[at + 10] == 32
        iso = data[at + 4] == 45 and data[at + 7] == 45 and data[at + 10] == 84
        if not (legacy or iso):
            continue
        year, month, day = _digits(data, at, 4), _digits(data, at + 5, 2), _digits(data, at + 8, 2)
        hour, minute, second = _digits(data, at + 11, 2), _digits(data, at + 14, 2), _digits(data, at + 17, 2)
        if year < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
            continue  # not digits: neither format, the caller reports it
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        in_range = 1 <= month <= 12 and day >= 1 and hour <= 23 and minute <= 59 and second <= 59
        in_range = in_range and year >= 1 and day <= month_days[month - 1] + (1 if month == 2 and leap else 0)
        fraction, offset = 0, 0
        if iso:
            fraction, offset, tail_ok = _fraction_and_offset(data, at + 19, at + size)
            if not (tail_ok and in_range and 2 <= year <= 9998):
                continue
        elif not in_range:
            state[i] = TIME_BAD
            continue
        days = _days_from_civil(year, month, day)
        seconds = ((days * 24 + hour) * 60 + minute) * 60 + second - offset
        micros[i] = seconds * 1_000_000 + fraction
        state[i] = TIME_OK
    return micros, state


@njit(cache=True, nogil=True)
def gather(data, start, length):  # type: ignore[no-untyped-def]
    """The bytes of each field, concatenated, and the Arrow (int32) offsets of each."""
    n = len(start)
    offsets = np.zeros(n + 1, np.int32)
    total = 0
    for i in range(n):
        total += length[i]
        offsets[i + 1] = total
    out = np.empty(total, np.uint8)
    for i in range(n):
        base = offsets[i]
        s = start[i]
        for j in range(length[i]):
            out[base + j] = data[s + j]
    return out, offsets
