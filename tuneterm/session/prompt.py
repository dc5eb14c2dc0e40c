"""``[data] prompt_template``: what a template may name (no torch, no textual).

The engine builds each prompt with ``template.format_map(record)``; a template that no
record can fill (an unbalanced brace, a positional ``{}``, attribute access) fails there
at the first record, so the session check refuses it first, on the key's line.
"""

from __future__ import annotations

import string


def template_problem(template: str) -> str | None:
    """Why ``template.format_map(record)`` fails whatever the record, or None."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # "Single '}' encountered in format string", ...
        return f"{e} (write a literal brace as {{{{ or }}}})"
    for name in fields:
        if not name or name.isdigit():
            return f"{{{name}}} is a positional field; name a record key, e.g. {{instruction}}"
        if "." in name.split("[", 1)[0]:
            return f"{{{name}}} uses attribute access; name a record key, e.g. {{{name.split('.', 1)[0]}}}"
    return None
