"""Evidence: the content-addressed store of footage and the segments filed from it."""
