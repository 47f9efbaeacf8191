"""SQLite persistence with a transactional outbox."""
