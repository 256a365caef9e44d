"""The recorder agent: capture, stamp, segment, chain — and the controls standing in for the buttons."""
