"""Pure decisions: facts in, decision and reasons out. No I/O here."""
