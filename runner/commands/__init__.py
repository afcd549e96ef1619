"""The commands layer: the CLI and every `hw3` command. Parse, call the run machinery or a
toolkit, print. Nothing below this package imports it."""
