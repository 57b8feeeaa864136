"""A stand-in for the embedded llama.cpp server that dies the way a broken build does: it answers
GET /v1/models (and chat requests, as tests/fake_openai.py does) but kills itself with a signal on
chosen POSTs. Run it as the embedded server through TEACHGRAPH_EMBEDDED_SERVER:

    TEACHGRAPH_EMBEDDED_SERVER="python tests/dying_server.py --port {port}"              # SIGSEGV on every POST
    ... --port {port} --answer 1 --count-file F                     # the first POST answered, every later one kills it

`--count-file` numbers POSTs across restarts (the supervisor starts a new process each time);
without it each process counts its own."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from teachgraph.testing.fake_openai import FakeOpenAI  # noqa: E402


class DyingServer(FakeOpenAI):
    def __init__(self, answer: int, dies_on: set[int], count_file: Path | None, sig: signal.Signals, **kw):
        super().__init__(**kw)
        self.answer, self.dies_on, self.count_file, self.sig = answer, dies_on, count_file, sig
        self._posts = 0

    def _number(self) -> int:
        with self._lock:
            if self.count_file is None:
                self._posts += 1
                return self._posts
            # locked: a run may start several of these servers, all counting in the same file
            with self.count_file.open("a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.seek(0)
                n = int(fh.read() or 0) + 1
                fh.seek(0)
                fh.truncate()
                fh.write(str(n))
            return n

    def _handle_chat(self, h, body: dict) -> None:
        n = self._number()
        if n in self.dies_on or (not self.dies_on and n > self.answer):
            print(f"dying_server: POST #{n}, killing myself with {self.sig.name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), self.sig)
            time.sleep(5)       # a signal that does not kill (it should) must not get an answer either
        super()._handle_chat(h, body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--answer", type=int, default=0, help="POSTs answered before every later one kills it")
    ap.add_argument("--die-on", default="", help="instead: only these POST numbers kill it, e.g. 3,5")
    ap.add_argument("--count-file", type=Path, help="count POSTs across restarts in this file")
    ap.add_argument("--signal", default="SIGSEGV")
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    dies_on = {int(n) for n in args.die_on.split(",") if n.strip()}
    server = DyingServer(args.answer, dies_on, args.count_file, signal.Signals[args.signal],
                         port=args.port, delay=args.delay)
    server.start()
    print(f"dying_server: listening on {server.base_url}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
