//! The same workloads against `redis-server` with `appendonly yes` and `appendfsync always` (the
//! durability fleetlog gives), mapping each op to what Redis-based coordination tools do.

use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;

use super::cpu::CpuMark;
use super::{BenchResult, Stop, Target, Workload, drive, result};
use crate::error::Error;

/// A redis-server on a loopback port and a temporary directory, stopped on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Result<Server, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("fleetlog-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Process::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => Error::Config(
                    "redis-server is not installed: `apt-get install redis-server`".into(),
                ),
                _ => Error::Io(error),
            })?;
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while server.connection().is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::Config("redis-server did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn connection(&self) -> Result<redis::Connection, Error> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .and_then(|client| client.get_connection())
            .map_err(|error| Error::Transport(error.to_string()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compare-and-delete: release a lock only with its token.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

struct Redis<'a>(&'a Server);

fn failed(error: redis::RedisError) -> Error {
    Error::Transport(error.to_string())
}

impl Target for Redis<'_> {
    type Client = redis::Connection;

    fn client(&self) -> Result<redis::Connection, Error> {
        self.0.connection()
    }

    fn prepare(&self, client: &mut redis::Connection, agent: &str) -> Result<(), Error> {
        client
            .hset::<_, _, _, ()>(format!("agent:{agent}"), "role", "bench")
            .map_err(failed)
    }

    fn op(
        &self,
        client: &mut redis::Connection,
        agent: &str,
        workload: Workload,
        op: u64,
    ) -> Result<(), Error> {
        let audit = |client: &mut redis::Connection, kind: &str| -> Result<(), Error> {
            client
                .xadd::<_, _, _, _, ()>("audit", "*", &[("agent", agent), ("kind", kind)])
                .map_err(failed)
        };
        match workload.pick(op) {
            Workload::Append | Workload::Mixed => audit(client, "custom")?,
            Workload::Ping => {
                let _: String = redis::cmd("PING").query(client).map_err(failed)?;
            }
            Workload::Heartbeat => {
                client
                    .set_ex::<_, _, ()>(format!("heartbeat:{agent}"), "ok", 600)
                    .map_err(failed)?;
                audit(client, "heartbeat")?;
            }
            Workload::Signal => {
                let key = format!("signal:{agent}:{op}");
                client
                    .set_ex::<_, _, ()>(&key, "payload", 60)
                    .map_err(failed)?;
                audit(client, "signal_sent")?;
                let _: Option<String> = redis::cmd("GETDEL")
                    .arg(&key)
                    .query(client)
                    .map_err(failed)?;
                audit(client, "signal_consumed")?;
            }
            Workload::Lock => {
                let key = format!("lock:bench/{agent}");
                let token = op.to_string();
                let acquired: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(30_000)
                    .query(client)
                    .map_err(failed)?;
                if acquired.is_none() {
                    return Err(Error::Transport("lock held".into()));
                }
                let _: i64 = redis::Script::new(RELEASE)
                    .key(&key)
                    .arg(&token)
                    .invoke(client)
                    .map_err(failed)?;
            }
            Workload::Queue => {
                let queue = format!("queue:{agent}");
                client.zadd::<_, _, _, ()>(&queue, op, 0).map_err(failed)?;
                let claimed: Vec<(u64, f64)> = redis::cmd("ZPOPMAX")
                    .arg(&queue)
                    .query(client)
                    .map_err(failed)?;
                let task = claimed
                    .first()
                    .map(|(task, _)| *task)
                    .ok_or_else(|| Error::Transport("empty queue".into()))?;
                client
                    .hset::<_, _, _, ()>(format!("task:{task}"), "state", "completed")
                    .map_err(failed)?;
                audit(client, "task_completed")?;
            }
        }
        Ok(())
    }
}

/// Runs `workload` with `clients` connections against a fresh redis-server.
pub fn run(workload: Workload, clients: u64, batch: u64, stop: Stop) -> Result<BenchResult, Error> {
    let server = Server::start()?;
    let target = Redis(&server);
    let pid = server.child.id();
    let cpu_before = CpuMark::now(Some(pid));
    let run = drive(&target, workload, clients, batch, stop, &|_| {})?;
    let cpu = cpu_before
        .zip(CpuMark::now(Some(pid)))
        .map(|(before, after)| before.per_op(&after, run.0, false));
    Ok(result("redis appendfsync=always".into(), workload, clients, run).with_cpu(cpu))
}
