import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# the real gpt2 BPE files, offline: ../shared sits beside the checkout in development and CI
_cache = os.path.join(ROOT, "..", "shared", "tiktoken_cache")
if os.path.isdir(_cache):
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.abspath(_cache))


def script_error(script, *args):
    """Run a script (e.g. "train.py") in this process with these arguments and return the one-line
    message of the CramError it stops with. A refusal happens before any work, so the cost of a
    subprocess is all torch's import (seconds per case on a slow CPU); tests that check many refusals
    use this, and a subprocess check per script keeps the printed form honest. Any other exception,
    or a script that finishes, fails the test."""
    import torch

    from configurator import CramError

    argv, hook, cwd = sys.argv, sys.excepthook, os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # train.py sets them on CUDA
    sys.argv = [script, *args]
    os.chdir(ROOT)  # as the subprocess runs: presets and relative paths resolve from the checkout
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except CramError as e:
        assert "\n" not in str(e), f"a multi-line error: {e}"
        return str(e)
    finally:
        sys.argv, sys.excepthook = argv, hook
        os.chdir(cwd)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    raise AssertionError(f"{script} {' '.join(args)} ran to the end instead of refusing")
