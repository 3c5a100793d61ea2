"""One module per `hgbench` subcommand; each exposes `add_parser(subparsers)` and `cmd_<name>(args) -> int`."""
