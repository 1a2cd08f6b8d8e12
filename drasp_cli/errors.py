"""Typed errors of the drasp library.

The library raises these and never prints; ``cli.main`` turns them into one line on stderr
and the exit code stored on the class.
"""

from __future__ import annotations


class DraspError(Exception):
    """Base of every error a user can act on."""

    exit_code = 1


class ConfigError(DraspError):
    """A configuration (a ``config.json``, an option) is invalid."""


class CheckpointError(DraspError):
    """A checkpoint is missing, unreadable or does not match its configuration."""


class AudioError(DraspError):
    """An audio input cannot be decoded or used."""


class DataError(DraspError):
    """A manifest, label list or system map is malformed."""


# Exit codes of the command line (2 is Typer/Click's usage error).
EXIT_OK = 0
EXIT_ERROR = 1  # nothing could run: bad model, bad options, no input could be scored
EXIT_INPUTS_FAILED = 3  # the run finished, but some inputs could not be scored
EXIT_GATE_FAILED = 4  # the run finished and the quality gate failed (takes precedence over 3)
