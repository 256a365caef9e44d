"""Where the recorder is: fixes from gpsd or straight from an NMEA receiver, for every record.

The agent uses :class:`LocationService` (``LocationService.from_config(config.location)``); the
providers are :class:`GpsdClient`, :class:`NmeaSerialReader` and :class:`NoLocation`. See
docs/recorder-location.md.
"""

from edge.location.errors import LocationError
from edge.location.fix import Fix, NoFix, Reception, Report
from edge.location.gpsd_client import GpsdClient
from edge.location.nmea import NmeaParser, NmeaStats
from edge.location.serial_reader import NmeaSerialReader
from edge.location.service import NO_GPS_CONFIGURED, LocationProvider, LocationService, NoLocation

__all__ = [
    "NO_GPS_CONFIGURED",
    "Fix",
    "GpsdClient",
    "LocationError",
    "LocationProvider",
    "LocationService",
    "NmeaParser",
    "NmeaSerialReader",
    "NmeaStats",
    "NoFix",
    "NoLocation",
    "Reception",
    "Report",
]
