"""What every stage uses: user errors, atomic writes, the CLI parser, plugins, default paths."""
