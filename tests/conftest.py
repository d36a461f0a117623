pytest_plugins = ["tests.kube_double.fixtures", "tests.prom_fixtures"]
