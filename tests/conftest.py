import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# the real gpt2 BPE files, offline: ../shared sits beside the checkout in development and CI
_cache = os.path.join(ROOT, "..", "shared", "tiktoken_cache")
if os.path.isdir(_cache):
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.abspath(_cache))
