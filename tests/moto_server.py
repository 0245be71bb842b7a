"""moto server for the local stack, with DynamoDB's requests served one at a time.

moto evaluates a conditional write's condition and then applies the write, with no lock
between the two, and its server answers requests on concurrent threads: two concurrent
conditional writes to one item can both pass their condition. DynamoDB applies each
conditional write atomically, and podbridge's guarantees (one record per job, one move
per transition) rest on that, so the stack serializes moto's DynamoDB requests. Other
services keep their concurrency (an SQS long poll must not hold everything up).

Usage: python tests/moto_server.py HOST PORT. `podbridge dev` embeds this file and runs
it with `python -c`, so the local stack serves DynamoDB the same way.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

DYNAMODB = threading.Lock()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)

    def serialized(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with DYNAMODB:
                # The whole answer is produced under the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
