//! `ssm-emulator serve|demo|demo-association|shell|port …`; see `usage()`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ssm_emulator::{Emulator, Options, attach, demo, demo_association};

fn usage() -> &'static str {
    "usage:\n  ssm-emulator serve [--port N] [--region R] [--instance-id I] [--state-file F]\n  \
     ssm-emulator demo --agent PATH [--command CMD]\n  \
     ssm-emulator demo-association --agent PATH\n  \
     ssm-emulator shell --agent PATH\n  \
     ssm-emulator port --agent PATH --local-port L --remote-port R [--mux]"
}

/// `--name value` pairs after the subcommand.
fn parse_flags(args: &[String], allowed: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !allowed.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag:?}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        out.push((flag.clone(), value.clone()));
    }
    Ok(out)
}

fn serve(args: &[String]) -> Result<(), String> {
    let flags = parse_flags(
        args,
        &["--port", "--region", "--instance-id", "--state-file"],
    )?;
    let mut options = Options::default();
    let mut state_file = None;
    for (flag, value) in flags {
        match flag.as_str() {
            "--port" => options.port = value.parse().map_err(|_| format!("--port {value:?}"))?,
            "--region" => options.region = value,
            "--instance-id" => options.instance_id = value,
            _ => state_file = Some(PathBuf::from(value)),
        }
    }
    let emu = Emulator::try_start(options).map_err(|e| format!("cannot listen: {e}"))?;
    println!("listening on {}", emu.url());
    match state_file {
        Some(path) => write_state_forever(&emu, &path),
        None => loop {
            std::thread::park();
        },
    }
}

/// Rewrites `path` (atomically) with the emulator's snapshot after every change.
fn write_state_forever(emu: &Emulator, path: &std::path::Path) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut seen = u64::MAX;
    loop {
        let version = emu.read(|st| st.version());
        if version != seen {
            let text = serde_json::to_string_pretty(&emu.snapshot()).unwrap_or_default();
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("writing state file {}: {e}", path.display()))?;
            seen = version;
        }
        emu.wait_until(Duration::from_secs(3600), |st| st.version() != seen);
    }
}

fn run_demo(args: &[String]) -> Result<bool, String> {
    let flags = parse_flags(args, &["--agent", "--command"])?;
    let pick = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    let agent = pick("--agent").ok_or("demo needs --agent PATH")?;
    let command = pick("--command").unwrap_or_else(|| demo::DEFAULT_COMMAND.to_string());
    demo::run(std::path::Path::new(&agent), &command)
}

fn run_demo_association(args: &[String]) -> Result<bool, String> {
    let flags = parse_flags(args, &["--agent"])?;
    let agent = flag(&flags, "--agent").ok_or("demo-association needs --agent PATH")?;
    demo_association::run(std::path::Path::new(&agent))
}

/// The value of `name` among parsed flags.
fn flag(flags: &[(String, String)], name: &str) -> Option<String> {
    flags
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.clone())
}

fn port_number(flags: &[(String, String)], name: &str) -> Result<u16, String> {
    let v = flag(flags, name).ok_or_else(|| format!("port needs {name} N"))?;
    v.parse()
        .map_err(|_| format!("{name} {v:?} is not a port number"))
}

fn run_attach(mode: &str, args: &[String]) -> Result<bool, String> {
    // `--mux` is the one flag without a value.
    let mux = mode == "port" && args.iter().any(|a| a == "--mux");
    let args: Vec<String> = args
        .iter()
        .filter(|a| !mux || *a != "--mux")
        .cloned()
        .collect();
    let flags = if mode == "shell" {
        parse_flags(&args, &["--agent"])?
    } else {
        parse_flags(&args, &["--agent", "--local-port", "--remote-port"])?
    };
    let agent = flag(&flags, "--agent").ok_or_else(|| format!("{mode} needs --agent PATH"))?;
    let agent = std::path::Path::new(&agent);
    if mode == "shell" {
        return attach::shell(agent);
    }
    let local = port_number(&flags, "--local-port")?;
    let remote = port_number(&flags, "--remote-port")?;
    attach::port(agent, local, remote, mux)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).map(|()| true),
        Some("demo") => run_demo(&args[1..]),
        Some("demo-association") => run_demo_association(&args[1..]),
        Some(mode @ ("shell" | "port")) => run_attach(mode, &args[1..]),
        _ => Err(usage().to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ssm-emulator: {e}");
            ExitCode::from(if args.is_empty() { 2 } else { 1 })
        }
    }
}
