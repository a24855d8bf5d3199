"""One module per sub-command; see cnnspec/cli.py."""
