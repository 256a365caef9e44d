"""The docking station: notices docked recorders, checks their chains, sets their clocks, syncs to the server."""
