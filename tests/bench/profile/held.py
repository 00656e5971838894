#!/usr/bin/env python3
"""held.py PORT N: N 40-token streams from the mock's slow port, one every 10 ms, each on a new client connection
that stays open until all N have started (so each needs a backend connection of its own unless the proxy's pool
has one). Prints the time to the first event's bytes, and Sluice's x-sluice-overhead-ms (its own time to the
head), as p10/p50/p90/p99 in ms. Run on core 0 (taskset -c 0), after up.sh or beside ngx.conf's nginx."""
import socket
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"bench-slow","messages":[{"role":"user","content":"hi"}],"max_tokens":40,"stream":true}'
request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer sk-bench\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
held, first, overhead = [], [], []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = time.perf_counter()
    s.sendall(request)
    got = b""
    while b"data:" not in got:
        more = s.recv(65536)
        if not more:
            sys.exit("the proxy closed the connection before a first event")
        got += more
    first.append((time.perf_counter() - t) * 1000)
    for line in got.split(b"\r\n"):
        if line.lower().startswith(b"x-sluice-overhead-ms:"):
            overhead.append(float(line.split(b":")[1]))
    held.append(s)
    time.sleep(0.01)
for s in held:
    s.close()


def quantiles(values):
    values = sorted(values)
    return " ".join("%.3f" % values[int(len(values) * q)] for q in (0.1, 0.5, 0.9, 0.99)) if values else "-"


print("first event p10/p50/p90/p99 ms:", quantiles(first), "| x-sluice-overhead-ms:", quantiles(overhead))
