"""NmeaParser against gpsd's own expected output for eight real captures, and the traps in them."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest

from edge.location import Fix, NmeaParser, NoFix
from edge.location.coords import nmea_to_e7
from tests.edge.location.helpers import (
    LOGS,
    MODE_2D_BY_RECEIVER,
    chk_epochs,
    compare_with_chk,
    log_lines,
    sentence,
)


def parse(lines: list[bytes] | list[str]) -> tuple[list[Fix | NoFix], NmeaParser]:
    """Run a whole input through a fresh parser."""
    parser = NmeaParser()
    return parser.feed_all(lines), parser


@pytest.mark.parametrize("name", LOGS)
def test_log_agrees_with_gpsd_chk(name: str) -> None:
    reports, parser = parse(log_lines(name))
    assert compare_with_chk(name, reports, MODE_2D_BY_RECEIVER.get(name, frozenset())) == []
    assert parser.stats.checksum_errors == 0
    assert parser.stats.epochs == len(chk_epochs(name))
    fixes = [r for r in reports if isinstance(r, Fix)]
    assert parser.stats.fixes == len(fixes) == sum(e.mode >= 2 for e in chk_epochs(name))
    for fix in fixes:
        record = fix.to_record()
        assert record["source"] == "nmea"
        # 2D fixes carry no altitude: the receiver assumed it.
        assert (record["alt_mm"] is None) == (fix.mode == 2)


def test_expected_fix_counts_from_the_readme() -> None:
    # The data README counts RMC fixes per log; the parser finds exactly those epochs.
    counts = {n: sum(isinstance(r, Fix) for r in parse(log_lines(n))[0]) for n in LOGS}
    assert counts == {
        "beidou-bd": 5,
        "beidou-gb": 2,
        "garmin25lp": 10,
        "haicom-305N": 68,
        "mt3339": 30,
        "mtk-3301": 4,
        "quectelLC79D-1": 29,
        "ublox-lea-5q": 0,
    }


def test_first_fixes_match_the_readme() -> None:
    first = {
        n: next(r for r in parse(log_lines(n))[0] if isinstance(r, Fix)) for n in LOGS if n != "ublox-lea-5q"
    }
    assert first["beidou-bd"].to_record() == {
        "t": "2015-02-25T07:41:55.799Z",
        "lat_e7": 312479500,
        "lon_e7": 1215874383,
        "alt_mm": 156900,
        "hacc_mm": 6500,  # HDOP 1.3 x UERE 5 m
        "mode": "3d",
        "sats": 5,
        "source": "nmea",
    }
    assert (first["quectelLC79D-1"].lat_e7, first["quectelLC79D-1"].lon_e7) == (500408921, 199805299)
    assert (first["mt3339"].lat_e7, first["mt3339"].lon_e7) == (440688433, -1213141917)
    assert (first["haicom-305N"].lat_e7, first["haicom-305N"].lon_e7) == (-272108667, 1530523283)


# -- the traps named in FACTS.md -----------------------------------------------------------------


def test_leading_space_before_gnrmc_is_accepted() -> None:
    lines = log_lines("beidou-bd")
    spaced = [line for line in lines if line.startswith(b" $GNRMC")]
    assert len(spaced) == 1  # the trap is really in the capture: " $GNRMC,074157.799,A,..."
    # On its own the spaced sentence is a complete (2D) fix: parsed, not skipped.
    (alone,), alone_parser = parse(spaced)
    assert isinstance(alone, Fix)
    assert alone.time == datetime(2015, 2, 25, 7, 41, 57, 799000, tzinfo=UTC)
    assert (alone.lat_e7, alone.lon_e7) == (312481700, 1215874050)
    assert alone_parser.stats.sentences == 1
    # And in the log it is counted among the sentences used.
    _, with_it = parse(lines)
    _, without_it = parse([line for line in lines if line not in spaced])
    assert with_it.stats.sentences == without_it.stats.sentences + 1


def test_rmc_status_v_with_a_stale_position_is_no_fix() -> None:
    reports, _ = parse(log_lines("garmin25lp"))
    assert [type(r).__name__ for r in reports] == ["NoFix"] * 10 + ["Fix"] * 10
    first = reports[0]
    assert isinstance(first, NoFix)
    assert first.reason == "no fix: receiver marks the position invalid (RMC status V)"
    # The V sentences carry 4221.4394 N, 01321.9948 E: a position, but not one the receiver vouches for.
    assert b"$GPRMC,120316,V,4221.4394,N,01321.9948,E" in log_lines("garmin25lp")[8]


def test_placeholder_latitude_is_refused_even_with_status_a() -> None:
    reports, _ = parse(
        [
            sentence("GPRMC,081436.000,A,8960.000000,N,00000.000000,E,0.039,0.00,230808,,,A"),
            sentence("GPGGA,081436.000,8960.000000,N,00000.000000,E,1,5,1.0,102.9,M,47.0,M,,"),
        ]
    )
    (only,) = reports
    assert isinstance(only, NoFix)
    assert "impossible position (8960.000000 N" in only.reason
    with pytest.raises(ValueError, match="60 or more"):
        nmea_to_e7("8960.000000", "N", latitude=True)


def test_mtk_cold_boot_placeholders_and_1980_dates_give_no_fix() -> None:
    reports, parser = parse(log_lines("mtk-3301"))
    assert [isinstance(r, Fix) for r in reports] == [False] * 7 + [True] * 4
    # The 1980 dates are never used as dates: those epochs have no time at all.
    assert [r.time for r in reports[:5]] == [None] * 5
    assert all(r.time is None or r.time.year == 2008 for r in reports)
    assert parser.stats.proprietary == 3 + 12  # $POLYN x3 (no checksum), $PMTK010, $PMTKCHN x11


def test_a_1980_date_with_status_a_is_refused() -> None:
    (only,), _ = parse([sentence("GPRMC,235950.004,A,5212.982135,N,00653.101394,E,0.0,0.0,050180,,,A")])
    assert isinstance(only, NoFix)
    assert only.reason.startswith("no fix: receiver date 1980-01-05 is not set yet")


def test_polyn_without_checksum_and_bad_checksums() -> None:
    lines = log_lines("mt3339")
    good, _ = parse(lines)
    # Corrupt one digit of a GGA's latitude, leaving its checksum: the sentence must be refused
    # and counted, and the epoch's position then comes from its intact RMC.
    target = next(i for i, line in enumerate(lines) if line.startswith(b"$GPGGA,202650.000"))
    broken = list(lines)
    broken[target] = lines[target].replace(b"4404.1305", b"4404.1905")
    reports, parser = parse(broken)
    assert parser.stats.checksum_errors == 1
    assert [(r.lat_e7, r.lon_e7) for r in reports] == [(r.lat_e7, r.lon_e7) for r in good]  # type: ignore[union-attr]
    # A standard sentence without any checksum is not trusted either.
    _, strict = parse(
        [b"$GPGGA,202650.000,4404.1305,N,12118.8515,W,2,11,0.83,1127.7,M,-19.6,M,0000,0000\r\n"]
    )
    assert strict.stats.missing_checksum == 1
    assert strict.stats.sentences == 0
    _, mtk = parse([b"$POLYN,TIME,RESTART_OCCURRED\n"])
    assert mtk.stats.proprietary == 1
    assert mtk.stats.missing_checksum == 0


# -- combining sentences -------------------------------------------------------------------------


def test_gst_gives_accuracy_better_than_hdop() -> None:
    epoch = [
        sentence("GPRMC,120000.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A"),
        sentence("GPGGA,120000.00,3114.8770,N,12135.2463,E,1,08,1.3,10.0,M,8.3,M,,"),
        sentence("GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,2.0,1.3,1.5"),
    ]
    (with_hdop,), _ = parse(epoch)
    (with_gst,), _ = parse([*epoch, sentence("GPGST,120000.00,2.0,4.0,2.5,30.0,3.0,4.0,6.0")])
    assert isinstance(with_hdop, Fix)
    assert isinstance(with_gst, Fix)
    assert with_hdop.hacc_mm == 6500  # 1.3 x 5 m
    assert with_gst.hacc_mm == 5000  # sqrt(3^2 + 4^2) m from the receiver's own 1-sigma errors
    assert (with_gst.mode, with_gst.sats, with_gst.alt_mm) == (3, 8, 10000)


def test_beidou_and_other_talkers() -> None:
    base = "RMC,120000.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A"
    for talker in ("GP", "GN", "BD", "GB", "GL", "GA"):
        (fix,), _ = parse([sentence(talker + base)])
        assert isinstance(fix, Fix), talker
    reports, parser = parse([sentence("XX" + base)])
    assert reports == []
    assert parser.stats.other_talkers == 1


def test_gsa_group_from_several_constellations() -> None:
    epoch = [
        sentence("GNGGA,120000.00,3114.8770,N,12135.2463,E,1,,1.0,20.0,M,,M,,"),
        sentence("GPGSA,A,3,01,02,03,,,,,,,,,,1.8,1.0,1.5"),
        sentence("BDGSA,A,3,201,202,,,,,,,,,,,1.8,1.0,1.5"),
        sentence("GNRMC,120000.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A"),
    ]
    (fix,), _ = parse(epoch)
    assert isinstance(fix, Fix)
    assert (fix.mode, fix.sats) == (3, 5)  # GGA left the count empty: GPS 3 + BeiDou 2 from GSA


def test_gns_only_epoch_takes_the_date_from_the_previous_rmc_and_crosses_midnight() -> None:
    lines = [
        sentence("GNRMC,235959.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A"),
        sentence("GNGNS,235959.00,3114.8770,N,12135.2463,E,AA,06,1.0,20.0,8.3,,"),
        sentence("GNGNS,000000.00,3114.8771,N,12135.2463,E,AA,06,1.0,20.0,8.3,,"),
    ]
    first, second = parse(lines)[0]
    assert isinstance(second, Fix)
    assert first.time == datetime(2026, 11, 26, 23, 59, 59, tzinfo=UTC)
    assert second.time == datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)
    assert second.lat_e7 == 312479517


def test_no_gsa_and_three_satellites_is_2d() -> None:
    (fix,), _ = parse(
        [
            sentence("GPGGA,120000.00,3114.8770,N,12135.2463,E,1,03,2.0,20.0,M,,M,,"),
            sentence("GPRMC,120000.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A"),
        ]
    )
    assert isinstance(fix, Fix)
    assert (fix.mode, fix.alt_mm) == (2, None)


def test_flush_concludes_the_epoch_and_late_sentences_reopen_it() -> None:
    parser = NmeaParser()
    assert parser.feed(sentence("GPRMC,120000.00,A,3114.8770,N,12135.2463,E,0.0,0.0,261126,,,A")) == []
    (early,) = parser.flush()
    assert isinstance(early, Fix)
    assert early.alt_mm is None  # RMC alone: 2D, no altitude
    assert parser.flush() == []  # nothing new
    parser.feed(sentence("GPGGA,120000.00,3114.8770,N,12135.2463,E,1,08,1.0,20.0,M,,M,,"))
    (late,) = parser.flush()
    assert isinstance(late, Fix)
    assert (late.time, late.alt_mm) == (early.time, 20000)


def test_exact_decimal_conversion() -> None:
    assert nmea_to_e7("5002.453527", "N", latitude=True) == 500408921  # 50.04089211666...
    # 42 + 57.756531/60 = 42.96260885 exactly: a half unit of 1e-7 degree. Exact arithmetic rounds it
    # away from zero every time; the float formula round((42 + 57.756531 / 60) * 1e7) gives ...088.
    assert Fraction(42) * 10**7 + Fraction(57756531, 10**6) * 10**7 / 60 == Fraction(859252177, 2)
    assert nmea_to_e7("4257.756531", "N", latitude=True) == 429626089
    assert nmea_to_e7("4257.756531", "S", latitude=True) == -429626089
    assert nmea_to_e7("00000.000003", "W", latitude=False) == -1  # 0.5e-7 degree
    with pytest.raises(ValueError, match="beyond 90 degrees"):
        nmea_to_e7("9000.0001", "N", latitude=True)
    with pytest.raises(ValueError, match="hemisphere"):
        nmea_to_e7("3114.8770", "E", latitude=True)
