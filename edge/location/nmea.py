"""NMEA 0183 text to fixes: one result per receiver epoch, combining RMC, GGA, GNS, GLL, GSA, GST, ZDA.

NMEA has no epoch marker. Sentences carrying a time (RMC, GGA, GNS, GLL, GST, ZDA) are grouped by
that time; an epoch is concluded when a sentence with a different time arrives, or on ``flush()``
(the serial reader flushes when the line goes quiet between bursts). GSA carries no time: it belongs
to the window of sentences since the previous conclusion. For receivers that send GSA *before* the
epoch's timed sentences (the Quectel LC79D does), the GSA mode therefore lands one epoch early;
that only matters for the mode at the first or last epoch of a fix.

What counts as a fix is deliberately strict, because a position in an evidence record must be one
the receiver itself vouches for:

- RMC status must be ``A`` and its mode indicator (NMEA 2.3+) a satellite one (A, D, F, R, P).
  Receivers keep printing the last position with status ``V`` (the Garmin 25LP does): that is
  not a fix.
- GGA quality must be 1-5 (6 is dead reckoning, 7 manual, 8 simulator); GSA mode 1 means no fix.
- Coordinates with minutes of 60 or more are placeholders (the MTK-3301 prints ``8960.000000``
  before its first fix) and are refused, as is the exact point 0,0.
- A date before ``earliest_date`` is a receiver clock not yet set (the same MTK prints 1980 dates).

Fix mode follows the receiver's GSA: a receiver saying 2D with three satellites is believed, even
where gpsd reports 3D because GGA carries an (assumed) altitude. Without GSA, 3D needs an altitude
and at least four satellites, since fewer cannot solve for height.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from edge.location.coords import metres_to_mm, nmea_to_e7
from edge.location.fix import Fix, NoFix, Reception, Report

# Talkers whose positions we accept: GPS, multi-constellation, BeiDou (BD in the Chinese standard,
# GB in NMEA 4.10+), GLONASS, Galileo, QZSS, NavIC.
TALKERS = frozenset({"GP", "GN", "BD", "GB", "GL", "GA", "GQ", "GI"})
_USED = frozenset({"RMC", "GGA", "GNS", "GLL", "GSA", "GST", "ZDA"})
# Index of the time field in each timed sentence's data.
_TIME_FIELD = {"RMC": 0, "GGA": 0, "GNS": 0, "GLL": 4, "GST": 0, "ZDA": 0}

# User equivalent range error, 1 sigma, for single-frequency autonomous GNSS. The GPS SPS
# Performance Standard bounds the signal-in-space range error at 7.8 m (95 %), about 4 m 1-sigma;
# ionosphere, troposphere, multipath and receiver noise add to it, giving the usual textbook 5-6 m.
# hacc = HDOP x UERE is then the horizontal DRMS (about 1 sigma). We keep this conservative value
# for DGPS fixes too: overstating the error of evidence is the safe direction.
UERE_M = Decimal("5.0")
# Before this date a receiver's clock is not set (MTK receivers print 1980-01-05 before a fix).
EARLIEST_DATE = date(2000, 1, 1)

_GGA_FIX_QUALITIES = frozenset({"1", "2", "3", "4", "5"})
_GOOD_MODE_INDICATORS = frozenset("ADFRP")  # autonomous, differential, float/fixed RTK, precise
_TOD = re.compile(r"^(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?$")


@dataclass(slots=True)
class NmeaStats:
    """What the parser saw, for diagnosing a receiver or its wiring."""

    lines: int = 0
    sentences: int = 0  # well-formed sentences of the types we use
    checksum_errors: int = 0
    missing_checksum: int = 0
    malformed: int = 0
    proprietary: int = 0  # $P... sentences, skipped
    other_talkers: int = 0
    ignored: int = 0  # other sentence types, blank lines, comments
    epochs: int = 0
    fixes: int = 0


@dataclass(slots=True)
class _Epoch:
    tod: time
    received: Reception | None
    sentences: dict[str, list[str]] = field(default_factory=dict)
    dirty: bool = False  # holds sentences not yet concluded
    counted: bool = False  # already counted in the stats (a re-opened epoch is counted once)


class NmeaParser:
    """Feed NMEA lines (str or bytes) one at a time; get a Fix or NoFix as each epoch concludes."""

    def __init__(self, *, earliest_date: date = EARLIEST_DATE, uere_m: Decimal = UERE_M) -> None:
        self.earliest_date = earliest_date
        self.uere_m = uere_m
        self.stats = NmeaStats()
        self.reset()

    def reset(self) -> None:
        """Forget the epoch in progress and what was learnt from earlier ones (after a reconnect)."""
        self._epoch: _Epoch | None = None
        self._gsa: list[list[str]] = []
        self._sticky_mode: int | None = None
        self._last_date: tuple[date, time] | None = None

    def feed(self, line: str | bytes, received: Reception | None = None) -> list[Report]:
        """Take one line; returns the epoch it concluded, if any (usually an empty list)."""
        self.stats.lines += 1
        parsed = self._sentence(line)
        if parsed is None:
            return []
        kind, data = parsed
        if kind == "GSA":
            self._gsa.append(data)
            return []
        tod = _time_of_day(data[_TIME_FIELD[kind]] if len(data) > _TIME_FIELD[kind] else "")
        if tod is None:
            # A timed sentence with an empty or broken time cannot be placed in an epoch.
            self.stats.malformed += 1
            return []
        out: list[Report] = []
        epoch = self._epoch
        if epoch is None or epoch.tod != tod:
            if epoch is not None and epoch.dirty:
                out += self._conclude(epoch)
            epoch = self._epoch = _Epoch(tod=tod, received=received)
        epoch.sentences[kind] = data
        epoch.dirty = True
        if epoch.received is None:
            epoch.received = received
        return out

    def feed_all(self, lines: Iterable[str | bytes]) -> list[Report]:
        """Feed many lines and flush at the end (a whole log)."""
        out: list[Report] = []
        for line in lines:
            out += self.feed(line)
        return out + self.flush()

    def flush(self) -> list[Report]:
        """Conclude the epoch in progress (the line went quiet, or the input ended)."""
        if self._epoch is None or not self._epoch.dirty:
            return []
        # The epoch stays open: a late sentence with the same time re-opens and re-concludes it.
        return self._conclude(self._epoch)

    # -- sentences ---------------------------------------------------------------------------------

    def _sentence(self, line: str | bytes) -> tuple[str, list[str]] | None:
        import pynmea2

        text = line.decode("ascii", "replace") if isinstance(line, bytes) else line
        # Leading whitespace occurs in real logs (" $GNRMC" in the BeiDou capture); gpsd accepts it.
        text = text.strip()
        if not text.startswith("$") or len(text) < 7:
            self.stats.ignored += 1
            return None
        if text[1] == "P":
            # Proprietary sentences (Garmin $PGRM, MTK $PMTK, SiRF $PSRF, $POLYN without checksum).
            self.stats.proprietary += 1
            return None
        talker, kind = text[1:3], text[3:6]
        if kind not in _USED:
            self.stats.ignored += 1
            return None
        if talker not in TALKERS:
            self.stats.other_talkers += 1
            return None
        if "*" not in text:
            # A sentence without a checksum may be a line cut short; nothing of it is trusted.
            self.stats.missing_checksum += 1
            return None
        try:
            sentence = pynmea2.parse(text, check=True)
        except pynmea2.ChecksumError:
            self.stats.checksum_errors += 1
            return None
        except pynmea2.ParseError:
            self.stats.malformed += 1
            return None
        self.stats.sentences += 1
        return kind, [str(x).strip() for x in sentence.data]

    # -- epochs ------------------------------------------------------------------------------------

    def _conclude(self, epoch: _Epoch) -> list[Report]:
        gsa, self._gsa = self._gsa, []
        epoch.dirty = False
        s = epoch.sentences
        if not any(k in s for k in ("RMC", "GGA", "GNS", "GLL")):
            return []  # only ZDA/GST: nothing about a position
        report = self._judge(epoch, gsa)
        if not epoch.counted:
            epoch.counted = True
            self.stats.epochs += 1
            self.stats.fixes += isinstance(report, Fix)
        if isinstance(report, NoFix):
            self._sticky_mode = None  # a GSA mode from before a loss of fix says nothing now
        return [report]

    def _judge(self, epoch: _Epoch, gsa: list[list[str]]) -> Report:
        s = epoch.sentences
        rmc, gga, gns, gll = s.get("RMC"), s.get("GGA"), s.get("GNS"), s.get("GLL")
        when, date_problem = self._epoch_time(epoch)
        gsa_modes = [int(g[1]) for g in gsa if len(g) > 1 and g[1] in ("1", "2", "3")]

        def no_fix(reason: str) -> NoFix:
            return NoFix(reason=reason, time=when, received=epoch.received)

        if reason := _receiver_says_no_fix(rmc, gga, gns, gll, gsa_modes):
            return no_fix(reason)
        position = _position(gga, gns, rmc, gll)
        if isinstance(position, str):
            return no_fix(position)
        if when is None:
            return no_fix(date_problem or "no fix: the receiver has not reported a date")
        self._last_date = (when.date(), epoch.tod)

        sats = _int_field(gga, 6) or _int_field(gns, 6) or _gsa_satellites(gsa) or None
        if max(gsa_modes, default=1) >= 2:
            mode = max(gsa_modes)
            self._sticky_mode = mode
        elif self._sticky_mode is not None:
            mode = self._sticky_mode  # this epoch had no GSA: the receiver's last word still holds
        else:
            altitude_given = bool(_field(gga, 8) or _field(gns, 8))
            mode = 3 if altitude_given and sats is not None and sats >= 4 else 2
        return Fix(
            time=when,
            lat_e7=position[0],
            lon_e7=position[1],
            alt_mm=_altitude_mm(gga, gns) if mode == 3 else None,
            hacc_mm=self._hacc_mm(s.get("GST"), gga, gns, gsa),
            mode=3 if mode == 3 else 2,
            sats=min(sats, 255) if sats is not None else None,
            source="nmea",
            received=epoch.received,
        )

    def _epoch_time(self, epoch: _Epoch) -> tuple[datetime | None, str | None]:
        """The epoch's UTC datetime, from its own RMC or ZDA date, else the last good date."""
        s = epoch.sentences
        problem = None
        for found in (_rmc_date(s.get("RMC")), _zda_date(s.get("ZDA"))):
            if found is None:
                continue
            if isinstance(found, str):
                problem = found
            elif found < self.earliest_date:
                problem = (
                    f"no fix: receiver date {found.isoformat()} is not set yet (before {self.earliest_date})"
                )
            else:
                return datetime.combine(found, epoch.tod, tzinfo=UTC), None
        if problem is None and self._last_date is not None:
            # GGA-only epochs: carry the date on, across midnight when the time of day wraps.
            last, last_tod = self._last_date
            if epoch.tod >= last_tod:
                return datetime.combine(last, epoch.tod, tzinfo=UTC), None
            if _seconds(last_tod) - _seconds(epoch.tod) > 12 * 3600:
                return datetime.combine(last + timedelta(days=1), epoch.tod, tzinfo=UTC), None
            problem = "no fix: receiver time went backwards and no date was given"
        return None, problem

    def _hacc_mm(
        self, gst: list[str] | None, gga: list[str] | None, gns: list[str] | None, gsa: list[list[str]]
    ) -> int | None:
        # GST gives the receiver's own 1-sigma latitude and longitude errors: the better source.
        sigma_lat, sigma_lon = _decimal_field(gst, 5), _decimal_field(gst, 6)
        if sigma_lat and sigma_lon and sigma_lat > 0 and sigma_lon > 0:
            return metres_to_mm((sigma_lat**2 + sigma_lon**2).sqrt())
        hdop = _decimal_field(gga, 7) or _decimal_field(gns, 7)
        if hdop is None:
            hdop = next((h for g in reversed(gsa) if (h := _decimal_field(g, 15))), None)
        if hdop is None or hdop <= 0 or hdop >= 99:
            return None  # 0 and 99.99 are what receivers print when they have no DOP
        return metres_to_mm(hdop * self.uere_m)


# -- field helpers ------------------------------------------------------------------------------------


def _field(data: list[str] | None, index: int) -> str:
    return data[index] if data is not None and len(data) > index else ""


def _int_field(data: list[str] | None, index: int) -> int | None:
    text = _field(data, index)
    return int(text) if text.isdigit() else None


def _decimal_field(data: list[str] | None, index: int) -> Decimal | None:
    text = _field(data, index)
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _time_of_day(text: str) -> time | None:
    m = _TOD.match(text)
    if not m:
        return None
    hour, minute, second = int(m[1]), int(m[2]), int(m[3])
    if hour > 23 or minute > 59 or second > 59:
        return None  # includes a leap second 60, which datetime cannot hold: skip that epoch
    micro = int((m[4] or "0").ljust(6, "0")[:6])
    return time(hour, minute, second, micro)


def _seconds(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _rmc_date(rmc: list[str] | None) -> date | str | None:
    text = _field(rmc, 8)
    if not text:
        return None
    if len(text) != 6 or not text.isdigit():
        return f"no fix: receiver date {text!r} is malformed"
    yy = int(text[4:])
    # Two-digit years: 80-99 are the 1900s (receivers with unset clocks print 1980), else 2000s.
    year = 1900 + yy if yy >= 80 else 2000 + yy
    try:
        return date(year, int(text[2:4]), int(text[:2]))
    except ValueError:
        return f"no fix: receiver date {text!r} is not a date"


def _zda_date(zda: list[str] | None) -> date | str | None:
    day, month, year = _int_field(zda, 1), _int_field(zda, 2), _int_field(zda, 3)
    if day is None or month is None or year is None:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return f"no fix: receiver date {year}-{month}-{day} is not a date"


def _receiver_says_no_fix(
    rmc: list[str] | None,
    gga: list[str] | None,
    gns: list[str] | None,
    gll: list[str] | None,
    gsa_modes: list[int],
) -> str | None:
    """The first way the receiver itself says this epoch has no usable fix, as a reason."""
    if rmc is not None:
        if _field(rmc, 1) != "A":
            return f"no fix: receiver marks the position invalid (RMC status {_field(rmc, 1) or 'empty'})"
        indicator = _field(rmc, 11)
        if indicator and indicator not in _GOOD_MODE_INDICATORS:
            return f"no fix: receiver mode indicator {indicator} is not a satellite fix"
    if gga is not None and _field(gga, 5) not in _GGA_FIX_QUALITIES:
        return f"no fix: receiver reports fix quality {_field(gga, 5) or 'empty'}"
    if gns is not None:
        modes = _field(gns, 5)
        if not any(c in _GOOD_MODE_INDICATORS for c in modes):
            return f"no fix: receiver reports GNS mode {modes or 'empty'}"
    if gll is not None and _field(gll, 5) != "A":
        return f"no fix: receiver marks the position invalid (GLL status {_field(gll, 5) or 'empty'})"
    if gsa_modes and max(gsa_modes) == 1:
        return "no fix: receiver reports mode 1"
    return None


def _position(
    gga: list[str] | None, gns: list[str] | None, rmc: list[str] | None, gll: list[str] | None
) -> tuple[int, int] | str:
    """(lat_e7, lon_e7) from the first sentence that carries one, or the reason there is none."""
    for data, first in ((gga, 1), (gns, 1), (rmc, 2), (gll, 0)):
        if data is None:
            continue
        lat, ns, lon, ew = (_field(data, first + i) for i in range(4))
        if not (lat and lon):
            continue
        try:
            lat_e7 = nmea_to_e7(lat, ns, latitude=True)
            lon_e7 = nmea_to_e7(lon, ew, latitude=False)
        except ValueError as exc:
            return f"no fix: receiver sent an impossible position ({lat} {ns}, {lon} {ew}): {exc}"
        if lat_e7 == 0 and lon_e7 == 0:
            # 0,0 is what some receivers print with no position; no inspection happens in the Gulf of Guinea.
            return "no fix: receiver sent the placeholder position 0,0"
        return lat_e7, lon_e7
    return "no fix: receiver claims a fix but sends no position"


def _altitude_mm(gga: list[str] | None, gns: list[str] | None) -> int | None:
    for data, units in ((gga, _field(gga, 9)), (gns, "M")):
        text = _field(data, 8)
        if text and units in ("M", ""):
            try:
                return metres_to_mm(text)
            except ValueError:
                return None
    return None


def _gsa_satellites(gsa: list[list[str]]) -> int:
    # Multi-constellation receivers send one GSA per system; their PRN lists add up.
    return sum(1 for g in gsa for prn in g[2:14] if prn)
