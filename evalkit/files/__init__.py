"""Files on disk: atomic writes and hashing (fileio), output guards (guards), the bounded zip
reader (safezip) and the one download stack (download). Imports only the leaves."""
