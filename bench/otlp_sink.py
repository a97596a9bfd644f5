#!/usr/bin/env python3
"""bench/otlp_sink.py PORT STATS_FILE: an OTLP/HTTP receiver that accepts
every trace export (POST /v1/traces) and discards it, as a collector that
keeps up would; it counts requests and bytes into STATS_FILE. For bench/run
only: listens on 127.0.0.1."""

import http.server
import sys
import threading

port, stats_file = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
totals = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        with lock:
            totals["requests"] += 1
            totals["bytes"] += length
            with open(stats_file, "w") as out:
                out.write(f"{totals['requests']} {totals['bytes']}\n")
        # An empty ExportTraceServiceResponse: everything accepted.
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
