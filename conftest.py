pytest_plugins = ["mailgw_devstack.pytest_plugin"]
