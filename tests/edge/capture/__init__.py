"""Tests of the capture pipeline: sources, stamp, encoders, segments, pre-event ring."""
