"""The help formatter of the edge runtime's commands: every option's ``--help`` line shows its default."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except where there is no default to show (None, a flag that is off,
    a positional) or the help text already says it; choices show in ``{a,b,c}`` as argparse always does."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or "default" in text):
            return text
        return super()._get_help_string(action) or text
