//! TLS on the TCP listener (`serve --tls-cert --tls-key`): a TLS client that trusts the
//! certificate is served; plaintext on that port is not; bad files refuse the start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;

use tokio_rustls::rustls;

#[path = "support/harness.rs"]
mod harness;

use harness::{FLEETLOG, new_db};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Kills the daemon when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with TLS; the child and the address from its banner (`https://…`).
fn serve_tls(db: &Path, cert: &Path, key: &Path) -> (Killed, String) {
    let mut child = Process::new(FLEETLOG)
        .arg("--db")
        .arg(db)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let banner = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    let address = banner
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    match address {
        Some(address) => (Killed(child), address),
        None => {
            let _ = child.kill();
            panic!("the banner names no https address: {banner:?}");
        }
    }
}

/// `GET path` over TLS trusting only the fixture CA; the raw response.
fn get_over_tls(address: &str, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).expect("pem") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client connection");
    let socket = TcpStream::connect(address).expect("connect");
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .expect("the request is sent over TLS");
    let mut response = String::new();
    // A peer that closes without close_notify is an error in rustls; the response is in by then.
    let _ = tls.read_to_string(&mut response);
    response
}

#[test]
fn the_tcp_listener_serves_tls_and_refuses_plaintext() {
    let (_dir, db) = new_db();
    let (daemon, address) = serve_tls(&db, &fixture("cert.pem"), &fixture("key.pem"));
    let response = get_over_tls(&address, "/v1/health");
    let plain = {
        let mut socket = TcpStream::connect(&address).expect("connect");
        socket
            .write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("sent");
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        answer
    };
    drop(daemon);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(
        !String::from_utf8_lossy(&plain).contains("HTTP/1.1 200"),
        "plaintext HTTP was served on the TLS port"
    );
}

#[test]
fn unusable_tls_files_refuse_the_start_naming_the_file() {
    let (dir, db) = new_db();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("written");
    for (cert, key, named) in [
        (missing.clone(), fixture("key.pem"), missing.clone()),
        (not_pem.clone(), fixture("key.pem"), not_pem.clone()),
        (fixture("cert.pem"), not_pem.clone(), not_pem.clone()),
    ] {
        let out = Process::new(FLEETLOG)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&named.display().to_string()),
            "{named:?}: {stderr}"
        );
    }
}
