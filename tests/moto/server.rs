//! moto's server (PyPI `moto[server]`), started by a test on 127.0.0.1: an AWS implementation not
//! written by this project's hands, to judge the agent by. It is looked for in the Python venv
//! named by `SSM_LITE_TEST_VENV`, else `.venv-tests` of this checkout (`.ci/run` makes it from
//! tests/requirements.txt). Under CI a missing moto fails the test; elsewhere the test says how
//! to install it and passes without running.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to import and listen (seconds on a busy 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(60);

const INSTALL: &str = "python3 -m venv .venv-tests && \
                       .venv-tests/bin/pip install -r tests/requirements.txt";

/// The venv holding moto and boto3.
pub fn venv() -> PathBuf {
    std::env::var_os("SSM_LITE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tests"))
}

/// The venv when moto is installed in it; `None` (after saying how to install it) when it is not
/// and this is not CI. Under CI (`CI` set) a missing moto is a failure.
pub fn installed() -> Option<PathBuf> {
    let venv = venv();
    if venv.join("bin/moto_server").is_file() && venv.join("bin/python").is_file() {
        return Some(venv);
    }
    let missing = format!(
        "moto is not installed in {}: run `{INSTALL}` in the checkout (or point \
         SSM_LITE_TEST_VENV at a venv that has tests/requirements.txt installed)",
        venv.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{missing}");
    eprintln!("SKIPPED: {missing}");
    None
}

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Moto {
    /// Starts `moto_server` from `venv` on a free port of 127.0.0.1, logging to `log`, and waits
    /// until it listens.
    pub fn start(venv: &Path, log: PathBuf) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let out = fs::File::create(&log).expect("moto's log file");
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting moto_server");
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        moto.wait_listening(port);
        moto
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within {START_LIMIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`: the endpoint of every service moto emulates.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` (a path under tests/moto/) with the venv's Python, `args` after it and
    /// `input` on its standard input; returns its standard output, panicking if it fails.
    pub fn python(&self, venv: &Path, script: &str, args: &[&str], input: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/moto")
            .join(script);
        let mut child = Command::new(venv.join("bin/python"))
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the venv's python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{script} failed ({}): {}\nmoto's log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("UTF-8 from the helper")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- moto log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
