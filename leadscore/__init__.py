"""``leadscore``: the one command line. Subcommands come from ``training.commands`` and
``serving.commands``; this package only assembles them and turns user errors into one line."""
