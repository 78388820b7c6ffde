#!/usr/bin/env python3
"""Host-side TCP peer for tests/qemu-guest.sh, run inside the test's netns.

Port 5001: receives until EOF, writes the sha256 and byte count of what came.
Port 5002: sends MB MiB of random data, writes its sha256.
Usage: peer.py ADDR MB OUTDIR. Exits when both are done or after 300 s.
"""
import hashlib, os, socket, sys, threading

addr, mb, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def serve(port, fn):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(300)
    c, _ = s.accept()
    c.settimeout(120)
    fn(c)
    c.close()
    s.close()


def receive(c):
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    with open(os.path.join(out, "peer-rx"), "w") as f:
        f.write(f"{h.hexdigest()} {n}\n")


def send(c):
    data = os.urandom(mb << 20)
    with open(os.path.join(out, "peer-tx"), "w") as f:
        f.write(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    try:
        c.recv(1)
    except OSError:
        pass


ts = [threading.Thread(target=serve, args=a, daemon=True) for a in ((5001, receive), (5002, send))]
for t in ts:
    t.start()
for t in ts:
    t.join(300)
