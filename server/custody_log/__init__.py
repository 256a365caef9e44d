"""The custody log: every event in a piece of evidence's life at the server, append-only."""
