"""Example job specs: pass a file to a launcher with --spec (each defines get_config())."""
