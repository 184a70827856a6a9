"""A node's blob server: the openings it serves itself instead of storing them on the ledger.

`GET /v1/blobs/<64 hex digits>` answers the blob whose BLAKE3 digest (ledger.blobs.blob_digest) that is,
or 404. The bytes are public (an opening is revealed to everyone) and self-authenticating (the fetcher
checks the digest against the `opening` entry), so the server needs no authentication; it serves only
names that are digests, from what `lookup(digest)` gives. specs/audit.md, section 3.

Also here, for every author that serves blobs (nodes their openings, the dealer its releases): keeping a
blob under its digest, and answering `blob.request` entries with `blob.provide` (the data availability
rule of specs/audit.md, section 3).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from ledger import entries as E
from ledger.blobs import blob_digest
from ledger.subscribe import Subscription
from protocol import bodies as B

log = logging.getLogger("shardproof.blob_server")

BLOB_PATH = re.compile(r"^/v1/blobs/([0-9a-f]{64})$")


class BlobServer:
    """Serve `lookup(digest) -> bytes | None` over HTTP on `host:port` (port 0: any free port) in a thread."""

    def __init__(self, lookup: Callable[[bytes], bytes | None], host: str = "127.0.0.1", port: int = 0):
        self._lookup = lookup

        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                m = BLOB_PATH.match(self.path)
                data = None
                if m is not None:
                    try:
                        data = server_self._lookup(bytes.fromhex(m.group(1)))
                    except Exception as exc:  # noqa: BLE001 - a failed read is a 404, never a crash
                        log.warning("blob %s: %s: %s", m.group(1), type(exc).__name__, exc)
                if data is None:
                    self.send_error(404, "no such blob")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="blob-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def keep_blob(directory: Path, data: bytes) -> bytes:
    """Store `data` as `directory`/<digest hex> (written to a temporary name, then renamed); its digest."""
    d = blob_digest(data)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{d.hex()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, directory / d.hex())
    return d


def answer_blob_requests(led: Any, requests: Subscription, author: str, identity: Any,
                         blob_for: Callable[[str, bytes], bytes | None]) -> None:
    """Put on the ledger, as a `blob.provide` by `author` (signed with `identity`), every blob that a new
    `blob.request` on `requests` asks for and `blob_for(job_id, digest)` has; once per digest, also across
    restarts (a provide by `author` already on the ledger counts). A bad request is logged, never raised."""
    for le in requests.drain():
        try:
            job_id, digest = le.entry.body["job_id"], le.entry.body["digest"]
            data = blob_for(job_id, digest)
            if data is None or any(x.entry.author == author and x.entry.body["data"] == digest
                                   for x in led.by_job(job_id, kind=E.BLOB_PROVIDE)):
                continue
            led.put_blob(data)
            led.append(E.make_entry(identity, E.BLOB_PROVIDE, B.BlobProvide(job_id, digest).to_body()))
            log.info("job %s: put requested blob %s on the ledger", job_id, digest.hex()[:16])
        except Exception as exc:  # noqa: BLE001 - a bad request must not take the daemon down
            log.warning("blob.request at #%d: %s: %s", le.index, type(exc).__name__, exc)
