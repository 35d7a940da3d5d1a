"""The ``--help`` of every ``python -m cloud...`` command: descriptions as written, defaults and choices shown.

``argparse.ArgumentDefaultsHelpFormatter`` also prints "(default: None)" and "(default: False)" and repeats a
default the help text already names; this formatter adds "(default: X)" only when X says something.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; appends a meaningful default to each option's help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS, [], "") or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"
