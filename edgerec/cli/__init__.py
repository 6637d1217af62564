"""The command line on top: `edgerec`, the demo, admin commands and the process helpers."""
