"""Test-suite root. Being a rootdir conftest, its folder is put on sys.path, so the shared
helpers in tests/ (checkpoint writers, the live-server fixture) import by plain module name."""
