def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a 50-node BGP simulation (seconds each); deselect with -m 'not slow'"
    )
