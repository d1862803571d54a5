//! What the daemon's process tests share: a `fleetlog serve` child stopped on drop, a fresh
//! ledger path, and raw HTTP over TCP (so tests see exactly what goes over the wire).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use fleetlog::client::{BlockingClient, Endpoint};

pub const FLEETLOG: &str = env!("CARGO_BIN_EXE_fleetlog");

/// A running `fleetlog serve`, stopped on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub address: String,
    /// Lines the daemon wrote to stderr after its banner.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn start(db: &Path, extra: &[&str]) -> Daemon {
        Self::start_with_env(db, extra, &[])
    }

    /// As [`Daemon::start`], with `env` added to the daemon's environment.
    pub fn start_with_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Process::new(FLEETLOG)
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let banner = lines.next().and_then(Result::ok).unwrap_or_default();
        let address = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        let Some(address) = address else {
            // Never leave a daemon behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon's first line names no address: {banner:?}");
        };
        // Keep draining stderr so the daemon never blocks on a full pipe; keep it for tests
        // of the daemon's logs.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&logs);
        let drain = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().expect("log lines").push(line);
            }
        });
        Daemon {
            child,
            socket: fleetlog::wire::socket_path(db),
            address,
            logs,
            drain: Some(drain),
        }
    }

    pub fn client(&self) -> BlockingClient {
        BlockingClient::new(Endpoint::Unix(self.socket.clone())).expect("client")
    }

    /// Everything the daemon logged, once it has exited (its stderr is read to the end).
    pub fn logs_after_exit(&mut self) -> Vec<String> {
        if let Some(drain) = self.drain.take() {
            drain
                .join()
                .expect("the stderr reader ends with the daemon");
        }
        self.logs.lock().expect("log lines").clone()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let status = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("the daemon exits");
        assert!(exit.success(), "a graceful stop exits 0, got {exit}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn new_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.redb");
    (dir, db)
}

/// Sends raw bytes over TCP; returns the status code and the whole response.
pub fn raw_http(address: &str, request: &[u8]) -> (u16, String) {
    exchange(
        std::net::TcpStream::connect(address).expect("connect"),
        request,
    )
}

/// Sends raw bytes over the daemon's Unix socket; returns the status code and the response.
pub fn raw_unix_http(socket: &Path, request: &[u8]) -> (u16, String) {
    exchange(
        std::os::unix::net::UnixStream::connect(socket).expect("connect"),
        request,
    )
}

/// Writes `request`, reads until the daemon closes, and parses the status line.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> (u16, String) {
    stream.write_all(request).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

pub fn post(path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One request over TCP with `Connection: close`: the status, the response head, and the body
/// parsed as JSON (`null` if it is not JSON).
pub fn http(
    address: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, serde_json::Value) {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let (status, response) = raw_http(address, &bytes);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_owned(), json)
}
