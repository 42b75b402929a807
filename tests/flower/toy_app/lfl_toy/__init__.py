"""A numpy-only Flower app for the deployment harness tests: 3 rounds of averaging one array sent as raw bytes."""
