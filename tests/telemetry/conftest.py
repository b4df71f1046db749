from harness import mesh  # noqa: F401  (the fixture)
