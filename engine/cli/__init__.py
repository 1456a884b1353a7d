"""The ``neurolens`` command: a thin client of the engine. Each subcommand is one module in ``engine/cli/commands``."""
