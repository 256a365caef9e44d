"""Users, roles, sessions, API tokens and access requests for restricted records."""
