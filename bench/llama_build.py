"""The portable llama.cpp build against the native one (issue 11): compile time, and prompt and generation
speed of the embedded model with each. A benchmark, not a test; it compiles llama-cpp-python twice
(about 5 minutes each on 2 cores) and needs PyPI.

    python bench/llama_build.py                 # both builds, 1 and 2 threads
    python bench/llama_build.py --keep DIR      # keep the wheels and their installs under DIR

"native" is llama.cpp's default (GGML_NATIVE=ON: -march=native, every kernel this CPU has, AVX-512 and
AMX included); "portable" is teachgraph/llama-cmake-args. Each is built with `pip wheel --no-cache-dir`
into its own folder and installed with `pip install --target`, then measured in a fresh process that
puts that folder first on sys.path: SmolLM2-135M (the bundled GGUF) evaluates 700 prompt tokens and
generates 150, three times; the best of the three is printed (a shared machine is noisy), with the
build's llama.cpp system-info line and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.3.36"

MEASURE = r"""
import os, sys, time
import llama_cpp
from llama_cpp import Llama
from teachgraph.embedded import model_path
threads = int(sys.argv[1])
info = llama_cpp.llama_print_system_info().decode().strip()
llm = Llama(str(model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads, logits_all=False,
            verbose=False, n_batch=256, n_ubatch=256)
tokens = llm.tokenize(open(sys.argv[2]).read()[:4000].encode())[:700]
best_prompt = best_generate = 0.0
for _ in range(3):
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    best_prompt = max(best_prompt, len(tokens) / (time.perf_counter() - started))
    started, n = time.perf_counter(), 0
    for _token in llm.generate([], temp=0.7, reset=False):
        n += 1
        if n >= 150:
            break
    best_generate = max(best_generate, n / (time.perf_counter() - started))
print(f"{threads} thread(s): {best_prompt:.0f} prompt tokens/s, {best_generate:.0f} generated tokens/s "
      f"({1000 / best_generate:.1f} ms per token); load {os.getloadavg()[0]:.1f}")
print(f"  system info: {info}")
"""


def build(name: str, cmake_args: str, work: Path) -> float:
    wheels, site = work / f"wheel-{name}", work / f"site-{name}"
    wheels.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir",
                    f"llama-cpp-python=={VERSION}", "-w", str(wheels)],
                   env={**os.environ, "CMAKE_ARGS": cmake_args}, check=True)
    seconds = time.monotonic() - started
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    *map(str, wheels.glob("*.whl"))], check=True)
    return seconds


def measure(name: str, work: Path, threads: int) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work / f"site-{name}"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", MEASURE, str(threads), str(ROOT / "README.md")], env=env,
                          capture_output=True, text=True, check=True).stdout.rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="teachgraph-bench-llama-"))
    builds = {"native": "-DLLAVA_BUILD=OFF",
              "portable": (ROOT / "teachgraph" / "llama-cmake-args").read_text().strip()}
    print(f"# llama-cpp-python {VERSION}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; work dir {work}",
          flush=True)
    for name, cmake_args in builds.items():
        seconds = build(name, cmake_args, work)
        print(f"{name}: compiled in {seconds:.0f} s (CMAKE_ARGS={cmake_args})", flush=True)
    for name in builds:
        for threads in (1, 2):
            print(f"{name}, {measure(name, work, threads)}", flush=True)


if __name__ == "__main__":
    main()
