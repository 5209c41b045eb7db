"""An unreachable Cassandra is reported in one line whatever shape the driver's error
takes: a stream worker set up during an outage must wait for the node, not crash while
describing the error."""

from __future__ import annotations

from cassandra.cluster import NoHostAvailable

from fraud_detection.store.keyspace import _first_error


def test_the_first_error_of_either_shape_of_no_host_available():
    by_host = NoHostAvailable("Unable to complete the operation against any hosts",
                              {"127.0.0.1:9042": OSError("Connection refused\nmore")})
    assert _first_error(by_host) == "Connection refused"
    # A new session's pool lists only the hosts it tried.
    hosts_only = NoHostAvailable("Unable to connect to any servers", ["127.0.0.1"])
    assert _first_error(hosts_only) == "('Unable to connect to any servers', ['127.0.0.1'])"
