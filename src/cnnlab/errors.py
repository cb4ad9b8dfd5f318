"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""


class CnnlabError(Exception):
    """A problem with the user's input (config, data, run folder), with what to do about it."""
