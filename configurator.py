"""
Plain-Python overrides for a script's module-level settings, in nanoGPT's manner:

    python train.py config/cram_cpu.py --batch_size=64 --compile=False

Arguments are applied left to right. A path ending in .py is executed and every setting it
assigns overrides the script's default; --key=value overrides one setting, the value read as a
Python literal (True, 3e-4, (0.9, 0.98)) or else kept as a plain string. Unknown keys and values of
the wrong type are refused with a one-line error, because a silently ignored typo ruins a day of
compute. Unlike nanoGPT, a setting whose default is None takes any value. --help (or -h) prints the
script's usage and every setting with its default and comment, then exits. A CramError raised by the
script afterwards is printed as its one line, without a traceback, with exit status 1.
"""
import ast
import contextlib
import difflib
import os
import sys

SETTING_TYPES = (bool, int, float, str, tuple, list, type(None))


class CramError(Exception):
    """A user-facing error: what was wrong and how to fix it, in one line. The scripts print it
    without a traceback and exit 1 (configure() arranges that); code that imports them can catch it
    like any exception."""


def _one_line_errors(kind, error, tb):
    if issubclass(kind, CramError):
        print(error, file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, tb)


@contextlib.contextmanager
def overridden(scope, **overrides):
    """Run a script's functions in-process with some settings changed, as --key=value would change
    them, and put the defaults back afterwards (tests and notebooks call the scripts this way)."""
    keys = settings_of(scope)
    saved = {k: scope[k] for k in keys}
    try:
        for key, value in overrides.items():
            if key not in keys:
                raise CramError(f"unknown setting '{key}'; known settings: "
                                f"{', '.join(sorted(keys))}")
            scope[key] = _coerce(key, value, scope[key], "override")
        yield
    finally:
        scope.update(saved)


def require_at_least(minimum, **settings):
    """Refuse the first of these --key=value settings that is below minimum."""
    for key, value in settings.items():
        if value < minimum:
            raise CramError(f"--{key}={value}: must be at least {minimum}")


def require_folder(key, path):
    """Refuse an output folder that is a file, before any work is done."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CramError(f"--{key}={path} is a file: give a folder (it is created if missing)")


def settings_of(scope):
    """The settings of a script: its public module-level globals of plain types."""
    return [k for k, v in scope.items() if not k.startswith("_") and isinstance(v, SETTING_TYPES)]


def _coerce(key, value, default, source):
    if default is None or type(value) is type(default):
        return value
    if type(default) is float and type(value) is int:
        return float(value)
    # --betas=0.9,0.98 parses as a tuple
    if type(default) in (tuple, list) and type(value) in (tuple, list):
        return type(default)(value)
    raise CramError(f"{source}: {key} must be a {type(default).__name__} like its default "
                    f"{default!r}, got {value!r} ({type(value).__name__})")


def _parse(raw, default):
    if isinstance(default, str):
        return raw  # a str setting keeps the text as written: --out_dir=123 is the folder '123'
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _print_help(scope, keys):
    """The script's docstring, then each setting as --key=default with the comment from its line."""
    comments = {}
    script = scope.get("__file__") or ""
    # a setting's comment is on its line: "name = value  # ..." at the top of the script, or for
    # the model's settings (BertConfig's fields) "    name: type = value  # ..." in model.py
    for path, prefix in ((script, ""), (os.path.join(os.path.dirname(script), "model.py"), "    ")):
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                key, eq, rest = line.partition(" = ")
                key = key.removeprefix(prefix).partition(":")[0]
                if eq and key in keys and not comments.get(key):
                    comments[key] = rest.partition("  # ")[2].strip()
    print((scope.get("__doc__") or "").strip() + "\n\nsettings (default, then why):")
    for key in keys:
        print(f"  --{key}={scope[key]!r}" + (f"  # {comments[key]}" if comments.get(key) else ""))


def configure(scope, args=None):
    """Apply config files and --key=value args onto `scope` (a script's globals()); return the
    settings.
    From here on a CramError ends the script with its one-line message and exit status 1."""
    sys.excepthook = _one_line_errors
    keys = settings_of(scope)
    args = sys.argv[1:] if args is None else args
    if "--help" in args or "-h" in args:
        _print_help(scope, keys)
        raise SystemExit(0)
    for arg in args:
        if arg.startswith("--"):
            key, eq, raw = arg[2:].partition("=")
            if not eq:
                raise CramError(f"{arg}: expected --key=value, e.g. --{key}=...")
            pairs = [(key, _parse(raw, scope.get(key)))]
        else:
            if not os.path.isfile(arg):
                raise CramError(f"config file {arg} not found: pass a path such as "
                                f"config/cram_cpu.py, or --key=value")
            # __file__: a preset may build on another beside it (config/bert_original_cpu.py does)
            file_scope = {"__file__": os.path.abspath(arg)}
            try:
                with open(arg) as f:
                    exec(compile(f.read(), arg, "exec"), file_scope)
            except Exception as e:  # a typo in a preset must not look like a crash of the script
                raise CramError(f"config file {arg}: {type(e).__name__}: {e}")
            pairs = [(k, file_scope[k]) for k in settings_of(file_scope)]
        for key, value in pairs:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
                if close:
                    hint = f"; did you mean {', '.join(close)}?"
                else:
                    hint = f"; known settings: {', '.join(sorted(keys))}"
                raise CramError(f"{arg}: unknown setting '{key}'{hint}")
            scope[key] = _coerce(key, value, scope[key], arg)
            print(f"override: {key} = {scope[key]!r}  ({arg})")
    return {k: scope[k] for k in keys}
