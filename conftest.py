"""Repository-root conftest: its presence puts the repository root on sys.path,
so tests can import the `tests` and `tools` packages."""
