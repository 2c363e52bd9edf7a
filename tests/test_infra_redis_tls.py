"""A real TLS Redis: a throwaway CA and server certificate, a `redis-server` of our own that listens on
TLS only, and REDIS_URL=rediss://...?ssl_ca_certs=<ca> carried (through settings, our client and Feast's
connection string) to our writer and reader (raw RESP on the SSL socket) and to Feast's RedisOnlineStore.
A plaintext client on the TLS port, or a TLS client that does not trust the CA, fails with a clear error."""

from __future__ import annotations

import ipaddress
import re
import shutil
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest
import redis

from core.redis_server import ensure_redis, feast_connection_string, free_port, redact_url, redis_client
from core.settings import load_settings
from onlinestore.online_reader import OnlineFeatureReader, online_store_client
from onlinestore.online_writer import publish_latest
from onlinestore.redis_layout import ViewLayout
from onlinestore.resp import send_packed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYOUT = ViewLayout("tls_view", (("user_id", "int64"),), (("txn_count", "int64"), ("score", "double")))
REFS = ["tls_view:score", "tls_view:txn_count"]
ENTITIES = 5_000  # replies of many TLS records (16 KiB each): the reader's raw recv_into loops over them
NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
MISSING = 987_654_321



def built_without_tls(output: str) -> str | None:
    """What a redis-server built without TLS says when it exits on a TLS port, else None. Redis <= 7.0
    has no tls-* directives at all (its config error quotes the directive), Redis >= 7.2 (TLS built in
    or as a module) has them but finds no TLS connection type."""
    if "Failed finding TLS support" in output or "Missing implement of connection type tls" in output:
        return "Failed finding TLS support"
    quoted = re.search(r"^>>> '(tls-[a-z-]+)", output, re.M)
    if quoted and "Bad directive or wrong number of arguments" in output:
        return f"Bad directive {quoted.group(1)}"
    return None


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs, for 127.0.0.1 and localhost (hostname checked)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    start, end = datetime.now(timezone.utc) - timedelta(minutes=5), datetime.now(timezone.utc) + timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"featurestack test CA {uuid.uuid4().hex[:8]}")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(pem_key(server_key))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


@dataclass
class TlsRedis:
    port: int
    ca_file: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        """REDIS_URL as a deployment would set it: rediss:// plus the CA bundle that signed the server."""
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file), safe='/')}&ssl_cert_reqs=required"


def _start_tls_redis(directory: Path) -> TlsRedis:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs a redis-server binary on PATH")
    ca_file, cert_file, key_file = _write_certificates(directory / "tls")
    port = free_port()
    log = directory / "redis.out"
    with log.open("wb") as output:  # logfile "" : the server logs to stdout, config errors go to stderr
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
             "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(directory), "--logfile", ""],
            stdout=output, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            text = log.read_text(errors="replace")
            reason = built_without_tls(text)
            if reason:
                pytest.skip(f"{binary} was built without TLS support (it says: {reason!r}); "
                            "rebuild it with BUILD_TLS=yes or install a TLS-enabled redis-server")
            raise RuntimeError(f"TLS redis-server exited with {process.returncode}:\n{text[-3000:]}")
        try:
            with redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ca_file), socket_timeout=1, socket_connect_timeout=1) as probe:
                probe.ping()
            break
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"TLS redis-server on {port} did not answer:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
    return TlsRedis(port, ca_file, process)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = _start_tls_redis(tmp_path_factory.mktemp("tls_redis"))
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


def _table() -> pa.Table:
    users = np.arange(1, ENTITIES + 1, dtype=np.int64)
    return pa.table({
        "user_id": pa.array(users),
        "txn_count": pa.array([None if u % 97 == 0 else int(u * 7) for u in users.tolist()], pa.int64()),
        "score": pa.array([None if u % 89 == 0 else u / 8 for u in users.tolist()], pa.float64()),
        "event_timestamp": pa.array([NOW] * ENTITIES, pa.timestamp("us", tz="UTC")),
    })


def _expected(user_ids: np.ndarray) -> np.ndarray:
    """[score, txn_count] per user as written, NaN for nulls and for users never written."""
    known = (user_ids >= 1) & (user_ids <= ENTITIES)
    score = np.where(known & (user_ids % 89 != 0), user_ids / 8, np.nan)
    count = np.where(known & (user_ids % 97 != 0), user_ids * 7.0, np.nan)
    return np.stack([score, count], axis=1)


@pytest.fixture(scope="module")
def published(tls_redis, tmp_path_factory):
    """Our writer's rows in the TLS Redis under a project of their own, through REDIS_URL and settings."""
    project = f"fs_tls_{uuid.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", tls_redis.url)
        patch.delenv("REDIS_TYPE", raising=False)
        settings = load_settings()
    endpoint = ensure_redis(settings.redis_url, tmp_path_factory.mktemp("tls_state"))  # it must answer PING
    assert endpoint.origin == "REDIS_URL" and endpoint.describe().startswith("rediss://127.0.0.1:")
    client = redis_client(endpoint.url, settings.redis_type)
    result = publish_latest(client, project, LAYOUT, _table(), batch_size=1_000)
    assert (result.entities, result.written) == (ENTITIES, ENTITIES)
    yield settings, project, client
    client.close()


def test_our_writer_and_reader_round_trip_over_tls(published, tls_redis):
    settings, project, client = published
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert kwargs["ssl_ca_certs"] == str(tls_redis.ca_file) and kwargs["ssl_cert_reqs"] == "required"

    # The serving client (timeouts, no retries) on the same URL, as the app builds it.
    serving_client = online_store_client(settings.redis_url, 5.0)
    reader = OnlineFeatureReader(serving_client, project, [LAYOUT], REFS)
    user_ids = np.concatenate([np.arange(1, ENTITIES + 1, dtype=np.int64), [MISSING, 89, 97, 1]])
    features = reader.read({"user_id": user_ids})
    np.testing.assert_array_equal(features.values, _expected(user_ids))
    assert features.missing_entity[:, 0].tolist() == [False] * ENTITIES + [True, False, False, False]

    # The reader really read raw bytes off an SSL socket (onlinestore.resp reads connection._sock directly).
    connection = serving_client.connection_pool.get_connection()
    try:
        assert isinstance(connection._sock, ssl.SSLSocket)
        assert connection._sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        serving_client.connection_pool.release(connection)

    # onlinestore.resp.send_packed (hiredis reader on sock.recv) on the same TLS socket, a reply > one TLS record.
    big = b"x" * 100_000
    replies = send_packed(serving_client, b"*3\r\n$3\r\nSET\r\n$9\r\ntls:probe\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$9\r\ntls:probe\r\n"
                          % (len(big), big) + b"*2\r\n$3\r\nDEL\r\n$9\r\ntls:probe\r\n", 3)
    assert replies == [b"OK", big, 1]

    # A second publish of the same rows is a no-op by Feast's monotonic rule (the probe reads work over TLS).
    assert publish_latest(client, project, LAYOUT, _table().slice(0, 100)).skipped_not_newer == 100
    serving_client.close()


def test_feast_reads_the_same_values_over_tls(published, tls_redis, tmp_path):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    settings, project, _ = published
    connection_string = feast_connection_string(settings.redis_url, settings.redis_type)
    assert connection_string == f"127.0.0.1:{tls_redis.port},db=0,ssl=true,ssl_ca_certs={tls_redis.ca_file},ssl_cert_reqs=required"
    store = FeatureStore(config=RepoConfig(
        project=project, registry=str(tmp_path / "registry.db"), provider="local",
        online_store={"type": "redis", "connection_string": connection_string},
        offline_store={"type": "duckdb"}, entity_key_serialization_version=3, repo_path=str(tmp_path),
    ))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(name=LAYOUT.name, entities=[user], ttl=timedelta(days=7), schema=[
        Field(name="txn_count", dtype=Int64), Field(name="score", dtype=Float64)],
        source=FileSource(path=str(tmp_path / "tls_view"), file_format=ParquetFormat(), timestamp_field="event_timestamp"))
    store.apply([user, view])

    user_ids = np.array([1, 2, 88, 89, 97, 4_999, ENTITIES, MISSING], dtype=np.int64)
    online = store.get_online_features(features=REFS, entity_rows=[{"user_id": int(u)} for u in user_ids],
                                       full_feature_names=True).to_dict()
    got = np.array([[np.nan if v is None else float(v) for v in online[ref.replace(":", "__")]] for ref in REFS]).T
    np.testing.assert_array_equal(got, _expected(user_ids))

    feast_client = store._get_provider().online_store._get_client(store.config.online_store)
    assert feast_client.connection_pool.connection_class is redis.SSLConnection
    assert feast_client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls_redis.ca_file)


def test_plaintext_or_an_untrusted_ca_on_the_tls_port_fails_clearly(tls_redis, tmp_path):
    started = time.monotonic()
    plain_url = f"redis://127.0.0.1:{tls_redis.port}/0"
    with pytest.raises(redis.ConnectionError) as plain:
        with redis.Redis.from_url(plain_url, socket_timeout=3, socket_connect_timeout=3) as client:
            client.ping()
    assert "closed" in str(plain.value).lower() or "reset" in str(plain.value).lower(), plain.value  # TLS alert, then reset
    # Our serving client too: a prompt ConnectionError (the app turns it into a 503), not a hang.
    with pytest.raises(redis.ConnectionError):
        online_store_client(plain_url, 3.0).ping()

    # TLS, but trusting only the system CAs (not ours): certificate verification fails, and says so.
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        with redis.Redis.from_url(f"rediss://127.0.0.1:{tls_redis.port}/0", socket_timeout=3) as client:
            client.ping()
    # Trusting another CA (a wrong ssl_ca_certs in REDIS_URL): verification fails the same way.
    other_ca, _, _ = _write_certificates(tmp_path / "other")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        with redis_client(f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={other_ca}", socket_timeout=3) as client:
            client.ping()
    assert time.monotonic() - started < 15
    assert redact_url(tls_redis.url) == tls_redis.url  # no password: nothing to hide, the CA path stays readable


@pytest.mark.parametrize(("output", "reason"), [
    # redis-server 7.0 built without TLS, as it really answers an unknown tls-* directive
    ("\n*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\nReading the configuration file, at line 3\n"
     ">>> 'tls-port \"6380\"'\nBad directive or wrong number of arguments\n", "Bad directive tls-port"),
    # redis-server >= 7.2 without the TLS connection type
    ("1:M 01 Jan 2026 00:00:00.000 # Missing implement of connection type tls\n"
     "1:M 01 Jan 2026 00:00:00.000 # Failed finding TLS support.\n", "Failed finding TLS support"),
    # other start failures are failures, not skips
    ("\n*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\n>>> 'save-bogus \"\"'\nBad directive or wrong number of arguments\n", None),
    ("# Failed to configure TLS. Check logs for more info.\n", None),
    ("# Warning: Could not create server TCP listening socket 127.0.0.1:6380: bind: Address already in use\n", None),
])
def test_a_redis_server_without_tls_is_recognised_from_what_it_says(output, reason):
    assert built_without_tls(output) == reason


def test_this_redis_server_quotes_an_unknown_directive_the_way_the_detection_expects(tmp_path):
    """Checks the detection's premise on the installed binary: an unknown tls-* directive (what a build
    without TLS sees for --tls-port) is reported in the quoted form built_without_tls looks for."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs a redis-server binary on PATH")
    done = subprocess.run([binary, "--port", "0", "--tls-no-such-option", "1"], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert built_without_tls(done.stdout + done.stderr) == "Bad directive tls-no-such-option"
