"""Imported once by the crash harness's forkserver, so that forked children start in milliseconds."""

import os
import threading
import warnings

os.environ["OMP_NUM_THREADS"] = "1"  # before torch: a forked child must not inherit a thread pool
# LanceDB resets its runtime in a forked child; the forkserver forks while idle, which is the safe case.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

import lancedb  # noqa: E402, F401
import tqdm  # noqa: E402

import beamscope.cli  # noqa: E402, F401
import pipeline.trace  # noqa: E402, F401
import warehouse  # noqa: E402, F401
import warehouse.vectors  # noqa: E402, F401

# A thread lock, copied into every child: tqdm's default lock is a multiprocessing semaphore shared
# by all forked children, and a child SIGKILLed while holding it left every later child waiting.
tqdm.tqdm.set_lock(threading.RLock())
