#!/usr/bin/env python3
"""Ends of the connections bench/net.sh measures (python3 only, no packages).

The senders hand the file to the kernel with sendfile(2), so that what is
measured is the path between the two ends, not the sender's copy loop
(python's http.server copies 64 KiB at a time and tops out near 1.4 GB/s
on the machines we measure on, which capped every path alike).

  netpeer.py http PORT DIR       HTTP/1.1 file server on 127.0.0.1:PORT,
                                 a thread per connection, bodies by sendfile
  netpeer.py blob PORT FILE      raw TCP: sends FILE to each connection
  netpeer.py byte PORT           sends one byte to each connection, closes
  netpeer.py get HOST PORT       reads a connection to its end; prints MB/s
                                 (MiB per second, as the rest of the bench)
  netpeer.py connect HOST PORT N opens N connections one after the other,
                                 each read to its end; prints connections/s
  netpeer.py ready HOST PORT     exit 0 if a connection there gets a byte
"""
import http.server
import os
import socket
import socketserver
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        outputfile.flush()
        self.connection.sendfile(source)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 512


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(512)
    return s


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "http":
        os.chdir(args[1])
        Server(("127.0.0.1", int(args[0])), Handler).serve_forever()
    elif mode == "blob":
        ls = listener(int(args[0]))
        while True:
            c, _ = ls.accept()
            try:
                with c, open(args[1], "rb") as f:
                    c.sendfile(f)
            except OSError:
                pass  # a reader that left early (a readiness probe)
    elif mode == "byte":
        ls = listener(int(args[0]))
        while True:
            c, _ = ls.accept()
            try:
                with c:
                    c.sendall(b"x")
            except OSError:
                pass
    elif mode == "get":
        s = socket.create_connection((args[0], int(args[1])))
        buf = bytearray(1 << 20)
        n = 0
        t = time.monotonic()
        while True:
            k = s.recv_into(buf)
            if not k:
                break
            n += k
        print(f"{n / (1 << 20) / (time.monotonic() - t):.0f}")
    elif mode == "connect":
        n = int(args[2])
        t = time.monotonic()
        for _ in range(n):
            with socket.create_connection((args[0], int(args[1]))) as s:
                while s.recv(64):
                    pass
        print(f"{n / (time.monotonic() - t):.0f}")
    elif mode == "ready":
        try:
            with socket.create_connection((args[0], int(args[1])), timeout=2) as s:
                sys.exit(0 if s.recv(1) else 1)
        except OSError:
            sys.exit(1)
    else:
        sys.exit(f"netpeer.py: unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
