//! moto server, started as a child process on a free loopback port and stopped with the
//! stack (the child is killed when its handle is dropped).
//!
//! It is always the pinned moto of `tests/requirements.txt`: the launcher
//! ([`SERIALIZED_MOTO`]) imports moto internals that change between moto releases, so
//! another release dies at startup with an import error. A `moto_server` on PATH is
//! therefore never used. Without `--moto`, the pinned moto comes from a venv kept as
//! `tests/venv.sh` keeps the test stack's: stamped with the SHA-256 of the requirements
//! it was installed from, and used only while that stamp matches. That is the `.venv` of
//! the current directory (a checkout's, when `make test` or `make demo` installed the same
//! requirements there), or else a venv of `podbridge dev`'s own in the user's cache
//! directory, installed on first use (a minute or so, once per change of the
//! requirements). The cache directory is looked for only then, so a usable `.venv` is
//! enough when neither XDG_CACHE_HOME nor HOME is set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tracing::info;

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// The launcher the test stack runs too: moto with its DynamoDB requests served one at a
/// time, so that a conditional write is atomic, as in DynamoDB (the file says why).
const SERIALIZED_MOTO: &str = include_str!("../../../tests/moto_server.py");

/// The pinned moto and every package of its dependency tree.
const REQUIREMENTS: &str = include_str!("../../../tests/requirements.txt");

/// The file in a venv holding the SHA-256 of the requirements it was installed from;
/// the name `tests/venv.sh` gives it, so the checkout's `.venv` can be recognised.
const STAMP: &str = ".requirements.sha256";

/// How to get the pinned moto by hand, for the errors that need it.
fn by_hand(venv: &Path) -> String {
    format!(
        "to install it by hand: `python3 -m venv {venv} && {venv}/bin/pip install -r tests/requirements.txt` \
         (from a podbridge checkout), then pass `--moto {venv}/bin/moto_server`; or pass --endpoint-url with the \
         URL of a running moto server (`make stack` starts one)",
        venv = venv.display()
    )
}

/// The moto version `tests/requirements.txt` pins (`moto[server]==X`).
fn pinned_version() -> &'static str {
    REQUIREMENTS
        .lines()
        .find_map(|line| line.trim().strip_prefix("moto[server]=="))
        .expect("tests/requirements.txt pins moto[server]")
}

/// The Python of a venv holding the pinned moto: the one of `explicit` (a `moto_server`
/// in a venv, from `--moto`) after checking its moto is the pinned release, else a venv
/// whose stamp matches the requirements: the current directory's `.venv`, or one
/// installed into the cache on first use.
pub async fn python(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(program) => python_of(program).await,
        None => pinned_venv(Path::new(".venv"), || cache_dir(|name| std::env::var_os(name))).await,
    }
}

/// The Python beside `program` (a `moto_server` installed in a venv), if its moto is the
/// pinned release.
async fn python_of(program: &Path) -> anyhow::Result<PathBuf> {
    let venv_hint = Path::new("VENV");
    // pipx and friends link the script from elsewhere; the venv is where it really is.
    let real = std::fs::canonicalize(program)
        .with_context(|| format!("--moto {}: no such file; {}", program.display(), by_hand(venv_hint)))?;
    let Some(python) = real.parent().map(|bin| bin.join("python")).filter(|python| python.exists()) else {
        bail!(
            "--moto {}: no `python` beside it, so it is not the moto_server of a Python venv; podbridge dev runs \
             tests/moto_server.py with that venv's Python; {}",
            program.display(),
            by_hand(venv_hint)
        );
    };
    let output = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('moto'))"])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", python.display()))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let pinned = pinned_version();
    if !output.status.success() {
        bail!("--moto {}: moto is not installed in its venv; {}", program.display(), by_hand(venv_hint));
    }
    if version != pinned {
        bail!(
            "--moto {}: its venv has moto {version}, but podbridge dev needs moto {pinned} (tests/requirements.txt): \
             tests/moto_server.py imports moto internals that differ between releases. Leave --moto out to have \
             podbridge dev install the pinned moto into its cache, or {}",
            program.display(),
            by_hand(venv_hint)
        );
    }
    Ok(python)
}

/// Where `podbridge dev` keeps its own venvs: `$XDG_CACHE_HOME/podbridge`, else
/// `$HOME/.cache/podbridge`.
fn cache_dir(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|path| path.is_absolute());
    match (absolute("XDG_CACHE_HOME"), absolute("HOME")) {
        (Some(cache), _) => Ok(cache.join("podbridge")),
        (None, Some(home)) => Ok(home.join(".cache").join("podbridge")),
        (None, None) => bail!(
            "neither XDG_CACHE_HOME nor HOME is set, so there is no cache directory to install the pinned moto \
             into; {}",
            by_hand(Path::new("VENV"))
        ),
    }
}

/// The SHA-256 of the requirements, as `tests/venv.sh` stamps a venv (computed by
/// Python, which installing moto needs anyway).
async fn requirements_digest() -> anyhow::Result<String> {
    let mut child = Command::new("python3")
        .args(["-c", "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "running python3: podbridge dev installs its pinned moto with python3 (3.11 or newer, with venv); \
                 install it, or {}",
                by_hand(Path::new("VENV"))
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin.write_all(REQUIREMENTS.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    anyhow::ensure!(output.status.success(), "python3 could not hash the requirements");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The venv's Python when the venv was installed from exactly these requirements and
/// its Python starts.
async fn usable(venv: &Path, digest: &str) -> Option<PathBuf> {
    let stamp = std::fs::read_to_string(venv.join(STAMP)).ok()?;
    let python = venv.join("bin").join("python");
    if stamp.trim() != digest || !python.exists() {
        return None;
    }
    let starts = Command::new(&python)
        .args(["-c", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    starts.is_ok_and(|status| status.success()).then_some(python)
}

/// A venv holding the pinned moto: `checkout_venv` if it matches, else one in the
/// directory `cache` gives, installed there first when it is not yet. `cache` is called
/// only when `checkout_venv` will not do, so that a missing cache directory stops only
/// the runs that need one.
async fn pinned_venv(checkout_venv: &Path, cache: impl FnOnce() -> anyhow::Result<PathBuf>) -> anyhow::Result<PathBuf> {
    let digest = requirements_digest().await?;
    if let Some(python) = usable(checkout_venv, &digest).await {
        return Ok(python);
    }
    let venv = cache()?.join(format!("moto-{}", &digest[..16.min(digest.len())]));
    if let Some(python) = usable(&venv, &digest).await {
        return Ok(python);
    }
    install(&venv, &digest).await?;
    usable(&venv, &digest)
        .await
        .with_context(|| format!("the venv just installed at {} does not start", venv.display()))
}

/// Installs the requirements into a fresh venv at `venv`, built beside it and moved into
/// place when complete, so that a venv at `venv` is always whole (and two stacks starting
/// at once do not install into the same one).
async fn install(venv: &Path, digest: &str) -> anyhow::Result<()> {
    let parent = venv.parent().context("the cache directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let partial = venv.with_extension(format!("partial-{}", std::process::id()));
    let log_path = venv.with_extension("log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    info!(
        venv = %venv.display(),
        "installing the pinned moto {} (tests/requirements.txt): once, a minute or so",
        pinned_version()
    );
    let _ = std::fs::remove_dir_all(&partial);
    let failed = |what: &str| format!("{what} (log: {}); {}", log_path.display(), by_hand(venv));
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .status()
        .await
        .with_context(|| failed("running python3 -m venv"))?;
    anyhow::ensure!(status.success(), failed("python3 -m venv failed"));
    let requirements = partial.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    let status = Command::new(partial.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await
        .with_context(|| failed("running pip"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        bail!(failed("installing the pinned moto failed"));
    }
    std::fs::write(partial.join(STAMP), format!("{digest}\n"))?;
    if let Err(error) = std::fs::rename(&partial, venv) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another stack finished the same install first: its venv is as good.
        if usable(venv, digest).await.is_none() {
            return Err(error).with_context(|| format!("moving the new venv to {}", venv.display()));
        }
    }
    Ok(())
}

/// Starts the launcher with `python` on a free port, its output in `log`, and waits
/// until it answers.
pub async fn start(python: &Path, log: &Path) -> anyhow::Result<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let output = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(python)
        .args(["-c", SERIALIZED_MOTO, "127.0.0.1", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting moto server with {}", python.display()))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("moto server exited during startup ({status}); see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("moto server did not listen on {endpoint} within 30 s; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Moto { endpoint, _child: child })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A directory of this test's own under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("podbridge-moto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A venv whose `python` is a script printing `version` (for any arguments), and a
    /// `moto_server` beside it.
    fn fake_venv(dir: &Path, version: &str) -> PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let python = bin.join("python");
        std::fs::write(&python, format!("#!/bin/sh\necho {version}\n")).unwrap();
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("moto_server"), "").unwrap();
        bin.join("moto_server")
    }

    #[test]
    fn the_pin_is_read_from_the_requirements() {
        let pinned = pinned_version();
        assert!(REQUIREMENTS.lines().any(|line| line == format!("moto[server]=={pinned}")), "{pinned}");
        assert!(pinned.starts_with(|c: char| c.is_ascii_digit()), "{pinned}");
    }

    #[test]
    fn the_cache_is_under_xdg_cache_home_else_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
        };
        let both = cache_dir(env(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/me")])).unwrap();
        assert_eq!(both, Path::new("/x/cache/podbridge"));
        let home = cache_dir(env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/me")])).unwrap();
        assert_eq!(home, Path::new("/home/me/.cache/podbridge"), "a relative XDG_CACHE_HOME is ignored");
        let error = cache_dir(env(&[])).unwrap_err().to_string();
        assert!(error.contains("HOME") && error.contains("--endpoint-url"), "{error}");
    }

    #[tokio::test]
    async fn an_explicit_moto_of_another_release_is_refused_with_how_to_get_the_pinned_one() {
        let dir = scratch("other-release");
        let program = fake_venv(&dir, "4.2.0");
        let error = python_of(&program).await.unwrap_err().to_string();
        assert!(error.contains("moto 4.2.0") && error.contains(&format!("moto {}", pinned_version())), "{error}");
        assert!(error.contains("pip install -r tests/requirements.txt"), "{error}");

        let pinned = fake_venv(&dir, pinned_version());
        assert_eq!(python_of(&pinned).await.unwrap(), std::fs::canonicalize(&dir).unwrap().join("bin/python"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_moto_server_outside_a_venv_is_refused() {
        let dir = scratch("no-venv");
        let program = dir.join("moto_server");
        std::fs::write(&program, "").unwrap();
        let error = python_of(&program).await.unwrap_err().to_string();
        assert!(error.contains("not the moto_server of a Python venv"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_venv_is_used_only_when_its_stamp_is_the_requirements_digest() {
        let dir = scratch("stamp");
        fake_venv(&dir, "ok");
        let digest = requirements_digest().await.unwrap();
        assert_eq!(digest.len(), 64, "{digest}");
        assert_eq!(usable(&dir, &digest).await, None, "no stamp");
        std::fs::write(dir.join(STAMP), "0123\n").unwrap();
        assert_eq!(usable(&dir, &digest).await, None, "another version of the requirements");
        std::fs::write(dir.join(STAMP), format!("{digest}\n")).unwrap();
        assert_eq!(usable(&dir, &digest).await, Some(dir.join("bin/python")));
        // The checkout's venv is taken as it is: nothing is installed.
        let cache = dir.join("cache");
        assert_eq!(pinned_venv(&dir, || Ok(cache.clone())).await.unwrap(), dir.join("bin/python"));
        assert!(!cache.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_usable_checkout_venv_needs_no_cache_directory() {
        let dir = scratch("no-cache");
        fake_venv(&dir, "ok");
        let digest = requirements_digest().await.unwrap();
        std::fs::write(dir.join(STAMP), format!("{digest}\n")).unwrap();
        // As with neither XDG_CACHE_HOME nor HOME set.
        let no_cache = || cache_dir(|_| None);
        assert_eq!(pinned_venv(&dir, no_cache).await.unwrap(), dir.join("bin/python"));
        let error = pinned_venv(&dir.join("absent"), no_cache).await.unwrap_err().to_string();
        assert!(error.contains("XDG_CACHE_HOME"), "without a usable venv, the missing cache is the error: {error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
