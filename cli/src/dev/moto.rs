//! moto server, started as a child process on a free loopback port and stopped with the
//! stack (the child is killed when its handle is dropped).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// The launcher the test stack runs too: moto with its DynamoDB requests served one at a
/// time, so that a conditional write is atomic, as in DynamoDB (the file says why).
const SERIALIZED_MOTO: &str = include_str!("../../../tests/moto_server.py");

/// The moto server program: `.venv/bin/moto_server` when the checkout has one (what
/// `make demo` and `make stack` install), else `moto_server` on PATH.
pub fn default_program() -> PathBuf {
    let local = Path::new(".venv/bin/moto_server");
    if local.exists() { local.to_path_buf() } else { PathBuf::from("moto_server") }
}

/// How to run `program` on `port`: a `moto_server` installed in a venv runs through
/// that venv's Python with [`SERIALIZED_MOTO`]; any other program as moto_server is run.
fn command(program: &Path, port: u16) -> Command {
    let port = port.to_string();
    let venv_python = program
        .parent()
        .filter(|_| program.file_name().is_some_and(|name| name == "moto_server"))
        .map(|bin| bin.join("python"))
        .filter(|python| python.exists());
    match venv_python {
        Some(python) => {
            let mut command = Command::new(python);
            command.args(["-c", SERIALIZED_MOTO, "127.0.0.1", &port]);
            command
        }
        None => {
            let mut command = Command::new(program);
            command.args(["-H", "127.0.0.1", "-p", &port]);
            command
        }
    }
}

/// Starts `program` on a free port, its output in `log`, and waits until it answers.
pub async fn start(program: &Path, log: &Path) -> anyhow::Result<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let output = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = command(program, port)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {}: install moto with `python3 -m venv .venv && .venv/bin/pip install -r \
                 tests/requirements.txt` (or `make demo`), pass --moto PATH, or point --endpoint-url at a \
                 running moto server",
                program.display()
            )
        })?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("moto server did not listen on {endpoint} within 30 s; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Moto { endpoint, _child: child })
}
