"""Export of a case as a BagIt bag that `fieldproof verify`, `bagit.py --validate` and `sha256sum -c` check."""
