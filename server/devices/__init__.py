"""Devices the server has heard of, and the certificates it trusts to speak for them."""
