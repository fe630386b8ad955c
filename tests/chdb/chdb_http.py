#!/usr/bin/env python3
"""A ClickHouse HTTP endpoint backed by chdb-core's embedded engine (current
ClickHouse, 26.x), for tests only.

Production runs a current ClickHouse server; this machine's server is 18.16.
So that every migration and every dashboard query is proven on the current
engine too, the tests point the product's own ClickHouse client at this shim:
the same code path, the same SQL, a current engine behind it.

It speaks the subset of the HTTP interface the `clickhouse` crate uses: POST
with the SQL in the body, `database` and `default_format` query parameters,
plain (uncompressed) answers, errors as HTTP 500 with ClickHouse's message;
and the crate's formatted inserts: the statement in the `query` parameter,
the data as a chunked body of ClickHouse's compressed blocks
(`decompress=1`, LZ4, needs the `lz4` package).

Usage: chdb_http.py DATA_DIR [PORT]   (PORT 0 picks a free one; the chosen
port is printed on stdout as `listening PORT`). CHDB_HTTP_LOG=1 prints each
query on stderr, to find the one a test is stuck on.
"""
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import chdb.session

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HAS_FORMAT = re.compile(r"\bFORMAT\s+[A-Za-z]+\s*;?\s*$", re.IGNORECASE)


def decompressed(data):
    """The data of ClickHouse's compressed blocks: each a 16-byte checksum
    (not checked here), a method byte (0x82 LZ4, 0x02 none), the block's
    size with its 9-byte header, the data's size, then the data."""
    import lz4.block

    out, i = [], 0
    while i < len(data):
        method = data[i + 16]
        size = int.from_bytes(data[i + 17:i + 21], "little")
        plain = int.from_bytes(data[i + 21:i + 25], "little")
        block = data[i + 25:i + 16 + size]
        if method == 0x82:
            out.append(lz4.block.decompress(block, uncompressed_size=plain))
        elif method == 0x02:
            out.append(block)
        else:
            raise ValueError(f"compression method {method:#x} is not supported by this shim")
        i += 16 + size
    return b"".join(out)


def main():
    data_dir = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    session = chdb.session.Session(data_dir)
    # Connections are served on threads (a pooled client may hold one idle
    # while it opens another); the embedded engine runs one query at a time.
    engine = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: tests read stdout
            pass

        def answer(self, status, body, content_type="text/plain; charset=UTF-8"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def do_GET(self):
            if urlparse(self.path).path in ("/ping", "/"):
                self.answer(200, b"Ok.\n")
            else:
                self.answer(404, b"not found\n")

        def do_POST(self):
            params = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
            body = self.body()
            if params.get("decompress") == "1":
                body = decompressed(body)
            sql = body.decode("utf-8")
            if "query" in params:
                sql = params["query"] + ("\n" + sql if sql else "")
            db = params.get("database")
            if db is not None and not IDENT.match(db):
                self.answer(400, b"Code: 81. DB::Exception: bad database name\n")
                return
            fmt = params.get("default_format") or "TabSeparated"
            if os.environ.get("CHDB_HTTP_LOG"):
                print(f"query: {sql[:300]!r}", file=sys.stderr, flush=True)
            try:
                with engine:
                    if db:
                        session.query(f"USE {db}")
                    if HAS_FORMAT.search(sql):
                        result = session.query(sql)
                    else:
                        result = session.query(sql, fmt)
                    body = result.bytes() if result is not None else b""
                self.answer(200, body or b"")
            except Exception as e:  # the engine's own message, as the server would send it
                self.answer(500, (str(e) + "\n").encode("utf-8"))

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
