"""Authentication: passwords, API tokens, sessions' identity, CSRF, login throttling."""
