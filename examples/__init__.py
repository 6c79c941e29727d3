"""Examples that go with the documentation; each one is tested in tests/."""
