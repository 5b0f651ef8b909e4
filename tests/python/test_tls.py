"""TLS in the Python binding: listen(tls=...) with PEM files or PEM text serves wss:// (the
`websockets` client with an ssl context) and https (http.client), client certificates with
``ca``, bad files raise with the core's reason; get_events(redis="rediss://...") reaches a
vxevents-server through a TLS-only redis-server. Certificates are made per run with the
openssl CLI."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage

import vxevents
from conftest import Client

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("VXEVENTS_SERVER", ROOT / "build" / "vxevents-server"))
REDIS = shutil.which("redis-server")
if REDIS is None or shutil.which("openssl") is None:
    raise RuntimeError("redis-server and openssl are needed by the TLS tests")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def leaf(d: Path, name: str, client: bool = False):
    ext = d / f"{name}.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n" if client else
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=d)
    srv = leaf(d, "srv")
    cli = leaf(d, "client", client=True)
    return {"ca": d / "ca.pem", "cert": srv[0], "key": srv[1], "client": cli}


def client_ctx(certs, with_cert=False):
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if with_cert:
        ctx.load_cert_chain(*map(str, certs["client"]))
    return ctx


def https_get(port, path, ctx):
    conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def test_listen_tls_with_paths_serves_wss_and_https(certs):
    with vxevents.events_plugin(api_key="k" * 20) as srv:
        port = srv.listen("127.0.0.1", 0, tls={"cert": certs["cert"], "key": str(certs["key"])})
        ctx = client_ctx(certs)
        c = Client(port, ssl=ctx)
        assert c.subscribe("py-tls")["type"] == "subscription_succeeded"
        srv.broadcast("py-tls", "hello", {"over": "wss"})
        m = c.recv_until(lambda m: m.get("event") == "hello")
        assert m["data"] == {"over": "wss"}
        status, body = https_get(port, "/health", ctx)
        assert status == 200 and json.loads(body)["connections"] == 1
        c.close()


def test_listen_tls_with_pem_text_and_client_certificates(certs):
    with vxevents.events_plugin() as srv:
        port = srv.listen("127.0.0.1", 0, tls={"cert": certs["cert"].read_text(),
                                               "key": certs["key"].read_bytes(),
                                               "ca": certs["ca"].read_text()})
        # TLS 1.3 checks the client's certificate after the handshake: the refusal comes as
        # an alert where the upgrade's answer (or the first message) was expected.
        with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage, ConnectionClosed)):
            Client(port, ssl=client_ctx(certs))
        c = Client(port, ssl=client_ctx(certs, with_cert=True))
        assert c.subscribe("mtls")["type"] == "subscription_succeeded"
        c.close()
        assert srv.stats()["tls_errors"] >= 1


def test_bad_tls_files_raise_with_the_reason(certs, tmp_path):
    with vxevents.events_plugin() as srv:
        with pytest.raises(vxevents.VxValueError, match=r"tls_cert: cannot read .*nope\.pem") as ei:
            srv.listen("127.0.0.1", 0, tls={"cert": tmp_path / "nope.pem", "key": certs["key"]})
        assert ei.value.code == "ETLS"
        with pytest.raises(vxevents.VxValueError, match=r"does not match the certificate"):
            srv.listen("127.0.0.1", 0, tls={"cert": certs["cert"], "key": certs["client"][1]})
        with pytest.raises(vxevents.VxValueError, match=r"tls\['key'\] is required"):
            srv.listen("127.0.0.1", 0, tls={"cert": certs["cert"]})
        # Nothing was configured: the listener is plain.
        port = srv.listen("127.0.0.1", 0)
        Client(port).close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rediss_worker_reaches_a_server_through_tls_redis(certs):
    rport = free_port()
    redis = subprocess.Popen([REDIS, "--port", "0", "--tls-port", str(rport), "--tls-cert-file",
                              str(certs["cert"]), "--tls-key-file", str(certs["key"]),
                              "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no",
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    server = None
    try:
        ctx = client_ctx(certs)
        deadline = time.monotonic() + 10
        while True:
            try:
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", rport), 0.5),
                                     server_hostname="localhost") as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "redis-server (TLS) did not start"
                time.sleep(0.05)
        url = f"rediss://localhost:{rport}"
        server = subprocess.Popen([str(SERVER), "--host", "127.0.0.1", "--port", "0", "--redis", url,
                                   "--redis-tls-ca", str(certs["ca"])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        port = int(line.split(":")[2].split()[0])
        c = Client(port)
        assert c.subscribe("rediss-py")["type"] == "subscription_succeeded"
        vxevents.close_events()
        worker = vxevents.get_events(redis=url, redis_tls_ca=str(certs["ca"]))
        try:
            deadline = time.monotonic() + 10
            while True:
                worker.broadcast("rediss-py", "job", {"done": True})
                try:
                    m = c.recv_until(lambda m: m.get("event") == "job", timeout=0.5)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "no broadcast through rediss"
            assert m["data"] == {"done": True}
        finally:
            vxevents.close_events()
            c.close()
    finally:
        if server:
            server.terminate()
            server.wait(10)
        redis.terminate()
        redis.wait(10)
