"""SQLite state: schema migrations and repositories. The database holds intent only."""
