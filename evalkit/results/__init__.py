"""Results: the result record (the one builder), leaderboards, check, HTML reports and the
files written beside a record."""
