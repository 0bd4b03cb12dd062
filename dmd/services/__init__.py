"""Domain operations over the database. Each takes a connection inside a transaction."""
