"""Compiled byte scanners behind :func:`ndr_jobs.panos.parse_arrow` (numba): one pass per line, no Python per row.

Each function reads the UTF-8 bytes of a batch of lines (the Arrow data buffer) and answers for every line at
once; :mod:`ndr_jobs.panos` turns the answers into Arrow columns and applies its rules. The checks here are
exact translations of the reference parser's (``INT_RE``/``PORT_RE``, the IPv4 part of ``IP_RE``, the legacy
time format and :func:`datetime.strptime`'s ranges); what they cannot settle (IPv6 addresses, ISO times) they
report as undecided, and the caller decides those few values with the reference rules.

Compiled code is cached on disk (``cache=True``): a Spark worker compiles once per machine, then loads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

COMMA, QUOTE, BRACE = 44, 34, 123
#: :func:`legacy_times` states
TIME_EMPTY, TIME_OK, TIME_BAD, TIME_OTHER = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def scan_lines(data, starts, ends, positions, width):  # type: ignore[no-untyped-def]
    """The comma layout of each line, and where fields ``positions`` (ascending, each < ``width``) are.

    Returns ``(n_commas, plain_prefix, plain, rest_quotes, field_start, field_length)``: per line, its number of
    commas; whether it has at least ``width`` commas and no quote or brace before its ``width``-th comma;
    whether that holds or it has no quote or brace at all; the quotes after its ``width``-th comma; and for
    each position (rows of the last two arrays), the field's first byte and length (0 when it is empty or missing).
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
        specials_prefix = 0
        specials = 0
        quotes_rest = 0
        field_begin = start
        j = 0  # the next wanted position
        for at in range(start, end):
            b = data[at]
            if b == COMMA:
                if commas < width and j < k and positions[j] == commas:
                    field_start[j, i] = field_begin
                    field_length[j, i] = at - field_begin
                    j += 1
                commas += 1
                field_begin = at + 1
            elif b == QUOTE or b == BRACE:  # noqa: SIM109 (a tuple test is slower in compiled code)
                specials += 1
                if commas < width:
                    specials_prefix += 1
                elif b == QUOTE:
                    quotes_rest += 1
        if j < k and positions[j] == commas and commas < width:  # the last field ends at the line's end
            field_start[j, i] = field_begin
            field_length[j, i] = end - field_begin
        n_commas[i] = commas
        has_rest = commas >= width
        plain_prefix[i] = has_rest and specials_prefix == 0
        plain[i] = plain_prefix[i] or specials == 0
        rest_quotes[i] = quotes_rest if has_rest else 0
    return n_commas, plain_prefix, plain, rest_quotes, field_start, field_length


@njit(cache=True, nogil=True)
def unsigned_integers(data, start, length, max_digits):  # type: ignore[no-untyped-def]
    """``(value, ok)`` of each field read as 1..``max_digits`` ASCII digits (``ok`` false otherwise)."""
    n = len(start)
    value = np.zeros(n, np.int64)
    ok = np.zeros(n, np.bool_)
    for i in range(n):
        size = length[i]
        if size < 1 or size > max_digits:
            continue
        v = 0
        good = True
        for at in range(start[i], start[i] + size):
            d = data[at] - 48
            if d < 0 or d > 9:
                good = False
                break
            v = v * 10 + d
        value[i] = v
        ok[i] = good
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
def _two(data, at):  # type: ignore[no-untyped-def]
    a, b = data[at] - 48, data[at + 1] - 48
    if a < 0 or a > 9 or b < 0 or b > 9:
        return -1
    return a * 10 + b


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
def legacy_times(data, start, length):  # type: ignore[no-untyped-def]
    """``(epoch_micros, state)`` per field: ``YYYY/MM/DD HH:MM:SS`` read as UTC, as ``strptime`` then ``datetime``.

    State :data:`TIME_EMPTY` (no value), :data:`TIME_OK`, :data:`TIME_BAD` (the legacy shape, out of range) or
    :data:`TIME_OTHER` (another shape: the caller decides).
    """
    n = len(start)
    micros = np.zeros(n, np.int64)
    state = np.zeros(n, np.int8)
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    for i in range(n):
        if length[i] == 0:
            continue
        at = start[i]
        if length[i] != 19 or data[at + 4] != 47 or data[at + 7] != 47 or data[at + 10] != 32:
            state[i] = TIME_OTHER
            continue
        if data[at + 13] != 58 or data[at + 16] != 58:
            state[i] = TIME_OTHER
            continue
        hi, lo = _two(data, at), _two(data, at + 2)
        month, day = _two(data, at + 5), _two(data, at + 8)
        hour, minute, second = _two(data, at + 11), _two(data, at + 14), _two(data, at + 17)
        if hi < 0 or lo < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
            state[i] = TIME_OTHER  # not digits: neither format, the caller reports it
            continue
        year = hi * 100 + lo
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        if year < 1 or month < 1 or month > 12 or day < 1 or hour > 23 or minute > 59 or second > 59:
            state[i] = TIME_BAD
            continue
        if day > month_days[month - 1] + (1 if month == 2 and leap else 0):
            state[i] = TIME_BAD
            continue
        days = _days_from_civil(year, month, day)
        micros[i] = ((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000
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
