"""A Beam Python worker pool for EXTERNAL environments, on 127.0.0.1: each SDK worker a
job asks for is a separate process of this interpreter, started in this pool's working
directory, so it imports the project only as installed.

    python -m fraud_detection.stack.worker_pool --port 50000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import (
    BeamFnExternalWorkerPoolServicer,
    kill_process_gracefully,
)

STATE_CACHE_BYTES = 100 << 20  # as Beam's local runners' default (100 MB)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Beam starts each worker as `python -c ...`: this interpreter, not PATH's first.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                          os.environ.get("PATH", "")])
    # Beam's pool gives its workers no state cache: every state read a round trip.
    pool = BeamFnExternalWorkerPoolServicer(use_process=True,
                                            state_cache_size=STATE_CACHE_BYTES)
    server = grpc.server(futures.ThreadPoolExecutor(16))
    # Beam's own pool listens on every interface; this one only on the loopback.
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    print(f"worker pool listening on 127.0.0.1:{args.port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    # `stack down`: the workers it started end with it.
    for worker in list(pool._worker_processes.values()):
        kill_process_gracefully(worker)
    server.stop(5).wait()


if __name__ == "__main__":
    main()
