"""moto server for the local stack, with DynamoDB's requests served one at a time.

moto evaluates a conditional write's condition and then applies the write, with no lock
between the two, and its server answers requests on concurrent threads: two concurrent
conditional writes to one item can both pass their condition. DynamoDB applies each
conditional write atomically, and podbridge's guarantees (one record per job, one move
per transition) rest on that, so the stack serializes moto's DynamoDB requests. Other
services keep their concurrency (an SQS long poll must not hold everything up).

moto also applies an UpdateItem's actions to the stored item one by one and checks the
item's size as it goes, so an update that would pass DynamoDB's 400 KB item limit is
refused with part of it already applied. DynamoDB applies an update whole or not at all;
the stack restores the item when moto's update fails, so a refused update changes
nothing, as in DynamoDB.

Usage: python tests/moto_server.py HOST PORT. `podbridge dev` embeds this file and runs
it with `python -c`, so the local stack serves DynamoDB the same way.
"""

import copy
import sys
import threading

from moto.dynamodb.parsing.executors import UpdateExpressionExecutor
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

DYNAMODB = threading.Lock()


def atomic_updates() -> None:
    """An UpdateItem that fails part-way leaves the item as it was."""
    execute = UpdateExpressionExecutor.execute

    def whole_or_nothing(self, node=None):
        if node is not None:
            return execute(self, node)
        before = copy.deepcopy(self.item.attrs)
        try:
            return execute(self)
        except Exception:
            self.item.attrs = before
            raise

    UpdateExpressionExecutor.execute = whole_or_nothing


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    atomic_updates()
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
