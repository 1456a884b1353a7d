"""One module per ``neurolens`` subcommand (see ``engine.cli.main``)."""
