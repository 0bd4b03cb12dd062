from tests.agent.test_binary import binary  # noqa: F401 (the built dist/dmc, as a fixture)
