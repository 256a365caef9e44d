"""Capture: frame and audio sources, the burned-in stamp, H.264/AAC encoding, fMP4 segments, pre-event ring.

PyAV and OpenCV are imported only inside the modules that use them, never at package import.
"""
