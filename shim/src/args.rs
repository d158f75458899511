//! Command-line parsing (hand-written: the shim has no dependencies).
//!
//! Options take their value as the next argument or after `=`
//! (`--timeout 5` or `--timeout=5`). `--` ends the options; everything after
//! it is PROGRAM and its arguments, passed through byte for byte.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

pub const USAGE: &str = "\
usage: gradeflow-shim [OPTIONS] -- PROGRAM [ARGS...]
       gradeflow-shim install DEST
       gradeflow-shim --version

  --ready-file PATH        wait until PATH exists before anything else
  --ready-timeout SECS     give up waiting (default 300)
  --expect-digest HEX      the ready file's trimmed content must equal HEX
  --workdir DIR            chdir here before running PROGRAM
  --uid N --gid N          run PROGRAM as N:N when started as root (default 65534)
  --keep-root              stay uid 0 (still no capabilities, no_new_privs, seccomp)
  --timeout SECS           wall-clock limit for PROGRAM and its descendants
  --kill-grace SECS        SIGTERM, then SIGKILL after this (default 2)
  --cpu SECS --memory BYTES --nproc N --nofile N --fsize BYTES
                           rlimits (CPU, AS, NPROC, NOFILE, FSIZE); core is always 0
  --env KEY=VALUE          PROGRAM's environment is exactly these, plus
  --pass-env KEY           these copied from the shim's own, plus a safe PATH
  --stdout PATH --stderr PATH
                           capture PROGRAM's output to these files
  --output-limit BYTES     keep at most BYTES of each (default 64M); the rest is discarded
  --result PATH            write the JSON envelope here atomically
  --no-network             new network namespace when the kernel allows it
  --require-no-network     ... and fail (exit 125) when it does not
  --seccomp default|off    syscall deny-list (default: default)
Sizes accept K, M, G suffixes (powers of 1024). SECS may be fractional.
";

/// The PATH PROGRAM gets unless `--env PATH=...` says otherwise.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default for `--output-limit`.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 64 << 20;

/// What the invocation asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Options>),
    Install(PathBuf),
    Version,
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    Default,
    Off,
}

/// Everything `run` needs; filled from the flags.
#[derive(Debug, PartialEq)]
pub struct Options {
    pub ready_file: Option<PathBuf>,
    pub ready_timeout: Duration,
    pub expect_digest: Option<String>,
    pub workdir: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    pub keep_root: bool,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub nproc: Option<u64>,
    pub nofile: Option<u64>,
    pub fsize: Option<u64>,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub output_limit: u64,
    pub result: Option<PathBuf>,
    pub no_network: bool,
    pub require_no_network: bool,
    pub seccomp: Seccomp,
    pub program: Vec<OsString>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ready_file: None,
            ready_timeout: Duration::from_secs(300),
            expect_digest: None,
            workdir: None,
            uid: 65534,
            gid: 65534,
            keep_root: false,
            timeout: None,
            kill_grace: Duration::from_secs(2),
            cpu: None,
            memory: None,
            nproc: None,
            nofile: None,
            fsize: None,
            env: Vec::new(),
            pass_env: Vec::new(),
            stdout: None,
            stderr: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            result: None,
            no_network: false,
            require_no_network: false,
            seccomp: Seccomp::Default,
            program: Vec::new(),
        }
    }
}

/// Parse the arguments after argv[0].
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, Error> {
    let mut args = args.into_iter();
    let mut opts = Options::default();
    let mut first = true;
    while let Some(raw) = args.next() {
        let arg = raw
            .to_str()
            .ok_or_else(|| Error::invalid(format!("argument {raw:?}"), "not valid UTF-8"))?;
        if first && arg == "install" {
            let dest = args
                .next()
                .ok_or_else(|| Error::invalid("install", "missing DEST"))?;
            if let Some(extra) = args.next() {
                return Err(Error::invalid(
                    "install",
                    format!("unexpected argument {extra:?}"),
                ));
            }
            return Ok(Command::Install(PathBuf::from(dest)));
        }
        first = false;
        match arg {
            "--" => {
                opts.program = args.collect();
                if opts.program.is_empty() {
                    return Err(Error::invalid("--", "missing PROGRAM"));
                }
                return validate(opts).map(|o| Command::Run(Box::new(o)));
            }
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            "--keep-root" => opts.keep_root = true,
            "--no-network" => opts.no_network = true,
            "--require-no-network" => {
                opts.no_network = true;
                opts.require_no_network = true;
            }
            _ if arg.starts_with("--") => {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (arg, None),
                };
                let value = match inline {
                    Some(v) => v,
                    None => {
                        let v = args
                            .next()
                            .ok_or_else(|| Error::invalid(name, "missing value"))?;
                        v.into_string().map_err(|v| {
                            Error::invalid(format!("{name} {v:?}"), "not valid UTF-8")
                        })?
                    }
                };
                set(&mut opts, name, value)?;
            }
            _ => {
                return Err(Error::invalid(
                    format!("argument {arg:?}"),
                    "expected an option; put `--` before PROGRAM",
                ))
            }
        }
    }
    Err(Error::invalid(
        "command line",
        "missing `--` before PROGRAM",
    ))
}

/// Apply one `--name value` pair.
fn set(o: &mut Options, name: &str, value: String) -> Result<(), Error> {
    let bad = |why: &str| Error::invalid(format!("{name} {value:?}"), why.to_string());
    match name {
        "--ready-file" => {
            o.ready_file = Some(non_empty_path(&value).ok_or_else(|| bad("empty path"))?)
        }
        "--ready-timeout" => {
            o.ready_timeout = secs(&value).ok_or_else(|| bad("expected seconds >= 0"))?
        }
        "--expect-digest" => {
            let hex = value.trim();
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("expected a hex digest"));
            }
            o.expect_digest = Some(hex.to_ascii_lowercase());
        }
        "--workdir" => o.workdir = Some(non_empty_path(&value).ok_or_else(|| bad("empty path"))?),
        "--uid" => o.uid = value.parse().map_err(|_| bad("expected a uid"))?,
        "--gid" => o.gid = value.parse().map_err(|_| bad("expected a gid"))?,
        "--timeout" => {
            let d = secs(&value)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| bad("expected seconds > 0"))?;
            o.timeout = Some(d);
        }
        "--kill-grace" => {
            o.kill_grace = secs(&value).ok_or_else(|| bad("expected seconds >= 0"))?
        }
        "--cpu" => {
            o.cpu = Some(
                value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("expected whole seconds > 0"))?,
            )
        }
        "--memory" => o.memory = Some(bytes(&value).ok_or_else(|| bad("expected bytes"))?),
        "--nproc" => o.nproc = Some(value.parse().map_err(|_| bad("expected a count"))?),
        "--nofile" => o.nofile = Some(value.parse().map_err(|_| bad("expected a count"))?),
        "--fsize" => o.fsize = Some(bytes(&value).ok_or_else(|| bad("expected bytes"))?),
        "--output-limit" => o.output_limit = bytes(&value).ok_or_else(|| bad("expected bytes"))?,
        "--env" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| bad("expected KEY=VALUE"))?;
            if !valid_env_key(k) || v.contains('\0') {
                return Err(bad("expected KEY=VALUE"));
            }
            o.env.retain(|(key, _)| key != k);
            o.env.push((k.to_string(), v.to_string()));
        }
        "--pass-env" => {
            if !valid_env_key(&value) {
                return Err(bad("expected a variable name"));
            }
            o.pass_env.push(value);
        }
        "--stdout" => o.stdout = Some(non_empty_path(&value).ok_or_else(|| bad("empty path"))?),
        "--stderr" => o.stderr = Some(non_empty_path(&value).ok_or_else(|| bad("empty path"))?),
        "--result" => o.result = Some(non_empty_path(&value).ok_or_else(|| bad("empty path"))?),
        "--seccomp" => {
            o.seccomp = match value.as_str() {
                "default" => Seccomp::Default,
                "off" => Seccomp::Off,
                _ => return Err(bad("expected default or off")),
            }
        }
        _ => return Err(Error::invalid(name, "unknown option (see --help)")),
    }
    Ok(())
}

/// Cross-flag checks.
fn validate(o: Options) -> Result<Options, Error> {
    if o.expect_digest.is_some() && o.ready_file.is_none() {
        return Err(Error::invalid("--expect-digest", "needs --ready-file"));
    }
    if o.program[0].is_empty() {
        return Err(Error::invalid("PROGRAM", "empty"));
    }
    Ok(o)
}

fn non_empty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty() && !s.contains('\0')).then(|| PathBuf::from(s))
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

/// Seconds, fractional allowed: "2", "0.25".
fn secs(s: &str) -> Option<Duration> {
    let f: f64 = s.trim().parse().ok()?;
    (0.0..1e9).contains(&f).then(|| Duration::from_secs_f64(f))
}

/// Bytes with an optional K/M/G suffix (powers of 1024).
fn bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, Error> {
        parse(args.iter().map(OsString::from))
    }

    fn run_opts(args: &[&str]) -> Options {
        match parse_strs(args).expect("parses") {
            Command::Run(o) => *o,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        parse_strs(args).expect_err("should fail").to_string()
    }

    #[test]
    fn defaults() {
        let o = run_opts(&["--", "/bin/true"]);
        assert_eq!(o.program, vec![OsString::from("/bin/true")]);
        assert_eq!(o.ready_timeout, Duration::from_secs(300));
        assert_eq!(o.kill_grace, Duration::from_secs(2));
        assert_eq!((o.uid, o.gid), (65534, 65534));
        assert_eq!(o.seccomp, Seccomp::Default);
        assert_eq!(o.output_limit, DEFAULT_OUTPUT_LIMIT);
        assert!(!o.no_network && !o.keep_root && o.timeout.is_none());
    }

    #[test]
    fn every_flag() {
        let o = run_opts(&[
            "--ready-file",
            "/r/ready",
            "--ready-timeout",
            "1.5",
            "--expect-digest",
            "ABcd01",
            "--workdir",
            "/w",
            "--uid",
            "1000",
            "--gid=1001",
            "--keep-root",
            "--timeout",
            "0.25",
            "--kill-grace",
            "0",
            "--cpu",
            "3",
            "--memory",
            "512M",
            "--nproc",
            "64",
            "--nofile",
            "128",
            "--fsize",
            "1k",
            "--env",
            "A=b=c",
            "--env",
            "EMPTY=",
            "--pass-env",
            "HOME",
            "--stdout",
            "/o",
            "--stderr",
            "/e",
            "--output-limit",
            "1G",
            "--result",
            "/res.json",
            "--no-network",
            "--seccomp",
            "off",
            "--",
            "prog",
            "--not-a-shim-flag",
            "x",
        ]);
        assert_eq!(o.ready_file, Some(PathBuf::from("/r/ready")));
        assert_eq!(o.ready_timeout, Duration::from_millis(1500));
        assert_eq!(o.expect_digest.as_deref(), Some("abcd01"));
        assert_eq!(o.workdir, Some(PathBuf::from("/w")));
        assert_eq!((o.uid, o.gid, o.keep_root), (1000, 1001, true));
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.kill_grace, Duration::ZERO);
        assert_eq!(o.cpu, Some(3));
        assert_eq!(o.memory, Some(512 << 20));
        assert_eq!(
            (o.nproc, o.nofile, o.fsize),
            (Some(64), Some(128), Some(1024))
        );
        assert_eq!(
            o.env,
            vec![("A".into(), "b=c".into()), ("EMPTY".into(), String::new())]
        );
        assert_eq!(o.pass_env, vec!["HOME".to_string()]);
        assert_eq!(o.stdout, Some(PathBuf::from("/o")));
        assert_eq!(o.stderr, Some(PathBuf::from("/e")));
        assert_eq!(o.output_limit, 1 << 30);
        assert_eq!(o.result, Some(PathBuf::from("/res.json")));
        assert!(o.no_network && !o.require_no_network);
        assert_eq!(o.seccomp, Seccomp::Off);
        assert_eq!(
            o.program,
            ["prog", "--not-a-shim-flag", "x"]
                .map(OsString::from)
                .to_vec()
        );
    }

    #[test]
    fn require_no_network_implies_no_network() {
        let o = run_opts(&["--require-no-network", "--", "p"]);
        assert!(o.no_network && o.require_no_network);
    }

    #[test]
    fn later_env_overrides_earlier() {
        let o = run_opts(&["--env", "A=1", "--env", "A=2", "--", "p"]);
        assert_eq!(o.env, vec![("A".into(), "2".into())]);
    }

    #[test]
    fn version_help_install() {
        assert_eq!(parse_strs(&["--version"]).unwrap(), Command::Version);
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help);
        assert_eq!(
            parse_strs(&["install", "/x/shim"]).unwrap(),
            Command::Install("/x/shim".into())
        );
        assert!(err(&["install"]).contains("missing DEST"));
    }

    #[test]
    fn missing_double_dash() {
        assert_eq!(err(&[]), "command line: missing `--` before PROGRAM");
        assert_eq!(
            err(&["--timeout", "3"]),
            "command line: missing `--` before PROGRAM"
        );
        assert!(err(&["/bin/true"]).contains("put `--` before PROGRAM"));
        assert!(err(&["--"]).contains("missing PROGRAM"));
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            err(&["--timeout", "abc", "--", "p"]),
            "--timeout \"abc\": expected seconds > 0"
        );
        assert!(err(&["--timeout", "0", "--", "p"]).contains("expected seconds > 0"));
        assert!(err(&["--timeout", "-1", "--", "p"]).contains("expected seconds"));
        assert!(err(&["--timeout", "inf", "--", "p"]).contains("expected seconds"));
        assert!(err(&["--kill-grace", "x", "--", "p"]).contains("--kill-grace"));
        assert!(err(&["--ready-timeout", "nan", "--", "p"]).contains("--ready-timeout"));
        assert!(err(&["--uid", "-1", "--", "p"]).contains("expected a uid"));
        assert!(err(&["--gid", "root", "--", "p"]).contains("expected a gid"));
        assert!(err(&["--cpu", "1.5", "--", "p"]).contains("whole seconds"));
        assert!(err(&["--cpu", "0", "--", "p"]).contains("whole seconds"));
        assert!(err(&["--memory", "lots", "--", "p"]).contains("expected bytes"));
        assert!(err(&["--memory", "99999999999G", "--", "p"]).contains("expected bytes"));
        assert!(err(&["--nproc", "many", "--", "p"]).contains("expected a count"));
        assert!(err(&["--nofile", "", "--", "p"]).contains("expected a count"));
        assert!(err(&["--fsize", "1T", "--", "p"]).contains("expected bytes"));
        assert!(err(&["--output-limit", "-5", "--", "p"]).contains("expected bytes"));
        assert!(err(&["--env", "NOEQUALS", "--", "p"]).contains("KEY=VALUE"));
        assert!(err(&["--env", "=v", "--", "p"]).contains("KEY=VALUE"));
        assert!(err(&["--pass-env", "A=B", "--", "p"]).contains("variable name"));
        assert!(err(&["--seccomp", "strict", "--", "p"]).contains("default or off"));
        assert!(err(&["--expect-digest", "xyz", "--ready-file", "/r", "--", "p"]).contains("hex"));
        assert!(err(&["--expect-digest", "ab", "--", "p"]).contains("needs --ready-file"));
        assert!(err(&["--ready-file", "", "--", "p"]).contains("empty path"));
        assert!(err(&["--workdir=", "--", "p"]).contains("empty path"));
        assert!(err(&["--bogus", "1", "--", "p"]).contains("unknown option"));
        assert_eq!(err(&["--timeout"]), "--timeout: missing value");
        assert!(err(&["--", ""]).contains("PROGRAM: empty"));
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("0"), Some(0));
        assert_eq!(bytes("10K"), Some(10240));
        assert_eq!(bytes("2g"), Some(2 << 30));
        assert_eq!(bytes("G"), None);
    }
}
