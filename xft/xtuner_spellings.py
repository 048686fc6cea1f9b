"""XTuner's spellings of xft commands and flags, rewritten to xft's with a one-line note.

People arrive with XTuner habits (`xtuner check-custom-dataset`, `--deepspeed
deepspeed_zero2`); xft accepts those spellings, says once what xft calls them, and
hands the rewritten command line on (so `--nproc` workers see xft's spelling only).
"""

COMMANDS = {"check-custom-dataset": "check-dataset", "log-dataset": "check-dataset"}
# Flags that take a value: (command, XTuner flag) → xft flag.
FLAGS = {("chat", "--prompt-template"): "--template"}
# Flags xft has no counterpart for: (command, flag) → why, dropped with their value.
DROPPED = {("check-dataset", "--show"): "check-dataset always shows the samples with "
           "their trained text marked, and the statistics"}
REFUSED = {("chat", "--system-template"): "xft takes the system prompt's own text: "
           "--system 'You are ...'"}
DEEPSPEED_PREFIX = "deepspeed_"  # XTuner's names of the shipped ZeRO configs


class SpellingError(ValueError):
    """An XTuner flag xft cannot translate: the message says what to write instead."""


def translate(argv):
    """(argv in xft's spelling, notes to print) for a command line in either spelling."""
    argv, notes = list(argv), []
    command_at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command_at is None:
        return argv, notes
    command = argv[command_at]
    if command in COMMANDS:
        notes.append(f"`{command}` is XTuner's spelling; xft's is `xft {COMMANDS[command]}`")
        command = argv[command_at] = COMMANDS[command]
    out = argv[:command_at + 1]
    rest = iter(argv[command_at + 1:])
    for arg in rest:
        flag, eq, value = arg.partition("=")
        if (command, flag) in REFUSED:
            raise SpellingError(f"{flag} is XTuner's; {REFUSED[command, flag]}")
        if (command, flag) in DROPPED:
            if not eq:
                next(rest, None)
            notes.append(f"{flag} is XTuner's and ignored: {DROPPED[command, flag]}")
            continue
        if (command, flag) in FLAGS:
            new = FLAGS[command, flag]
            notes.append(f"{flag} is XTuner's spelling; xft's is {new}")
            arg = f"{new}={value}" if eq else new
        elif flag == "--deepspeed":
            value = value if eq else next(rest, "")
            if value.startswith(DEEPSPEED_PREFIX) and "/" not in value \
                    and not value.endswith(".json"):
                notes.append(f"--deepspeed {value} is XTuner's spelling; xft's is "
                             f"--deepspeed {value[len(DEEPSPEED_PREFIX):]}")
                value = value[len(DEEPSPEED_PREFIX):]
            out += [f"--deepspeed={value}"]
            continue
        out.append(arg)
    return out, notes

