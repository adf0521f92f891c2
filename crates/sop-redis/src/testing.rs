//! A throwaway `redis-server` for tests (feature `testing`).
//!
//! [`RedisServer::start`] runs `redis-server` (found on `PATH`, or at `$REDIS_SERVER`) as a
//! child process on a free loopback port, without persistence, and kills it when dropped. It
//! panics with a clear message when `redis-server` is not installed: tests that need Redis
//! fail rather than skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisOptions;

/// How long a started server gets to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many free ports are tried before giving up (another process may take a port between
/// picking it and the server binding it).
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` child process on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    log: PathBuf,
}

impl RedisServer {
    /// Starts a server without a password.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer `PING` in time.
    #[must_use]
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts a server that requires `password` (`--requirepass`).
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer `PING` in time.
    #[must_use]
    pub fn start_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                password: password.clone(),
                log: std::env::temp_dir()
                    .join(format!("sop-redis-test-{}-{port}.log", std::process::id())),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => failures.push(format!("port {port}: {e}")),
            }
        }
        panic!(
            "could not start redis-server after {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// The port it listens on (loopback only).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the server.
    #[must_use]
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Options that reach this server (with its password), with short timeouts for tests.
    #[must_use]
    pub fn options(&self) -> RedisOptions {
        RedisOptions {
            address: self.address(),
            password: self.password.clone(),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(2),
            ..RedisOptions::default()
        }
    }

    /// Kills the server (its data is lost); [`RedisServer::restart`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port (with no data).
    ///
    /// # Panics
    /// When it does not come back and answer `PING` in time.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port was just closed by the killed server: binding it again normally works
        // at once (redis-server sets SO_REUSEADDR), but tolerate a short delay.
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "could not restart redis-server on port {}: {last}",
            self.port
        );
    }

    /// Deletes every key (`FLUSHALL`).
    ///
    /// # Panics
    /// When the server does not answer.
    pub fn flushall(&self) {
        let mut conn = self
            .connection(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("FLUSHALL: cannot reach redis-server: {e}"));
        redis::cmd("FLUSHALL")
            .query::<()>(&mut conn)
            .unwrap_or_else(|e| panic!("FLUSHALL on redis-server failed: {e}"));
    }

    /// A plain connection to the server (authenticated).
    ///
    /// # Errors
    /// When it cannot be reached.
    pub fn connection(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        use redis::IntoConnectionInfo as _;
        let info =
            redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.port).into_connection_info()?;
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let conn = redis::Client::open(info.set_redis_settings(settings))?
            .get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }

    /// Starts the process on `self.port` and waits until it answers `PING`.
    fn spawn(&mut self) -> Result<(), String> {
        let program = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut cmd = Command::new(&program);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .arg("--logfile")
            .arg(&self.log);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {program:?}: {e}. The sop-redis tests need a real Redis server: \
                 install it (e.g. `apt-get install redis-server`) or set REDIS_SERVER to its path"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {status} at start; its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            let pong = self
                .connection(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(p) if p == "PONG" => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    self.stop();
                    return Err(format!(
                        "redis-server on port {} did not answer PING within {START_TIMEOUT:?} \
                         ({other:?}); its log:\n{}",
                        self.port,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    ));
                }
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot pick a free loopback port: {e}"))
}
