"""A TCP sink for throughput benchmarks: accepts N connections, prints one JSON line per connection.

Runs inside the benchmark's own network namespace (ip netns exec NS python3 sink.py ADDR PORT N).
"""

import json
import socket
import sys
import time

address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.create_server((address, port))
server.settimeout(300)
print(json.dumps({"listening": f"{address}:{port}"}), flush=True)
for _ in range(count):
    conn, peer = server.accept()
    conn.settimeout(120)
    total, first, last = 0, None, None
    with conn:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            now = time.monotonic()
            first = first or now
            last = now
            total += len(data)
    seconds = (last - first) if first and last and last > first else 0.0
    print(json.dumps({"peer": peer[0], "bytes": total, "seconds": round(seconds, 3),
                      "mib_per_s": round(total / seconds / (1 << 20), 1) if seconds else None}), flush=True)
