//! The shim's one error type: which step failed, and why.
//!
//! `Display` reads like nsjail's logs, naming the call and the strerror text:
//! `prctl(PR_SET_NO_NEW_PRIVS, 1): Operation not permitted`.

use std::fmt;
use std::io;

/// Why a step failed.
#[derive(Debug)]
pub enum Kind {
    /// A syscall or file operation failed with this errno.
    Os(io::Error),
    /// The command line or an input file was not acceptable.
    Invalid(String),
}

/// A failed step of the shim.
#[derive(Debug)]
pub struct Error {
    /// The call or step that failed, e.g. `setresuid(65534, 65534, 65534)`.
    pub step: String,
    pub kind: Kind,
}

impl Error {
    pub fn os(step: impl Into<String>, err: io::Error) -> Self {
        Error {
            step: step.into(),
            kind: Kind::Os(err),
        }
    }

    /// An errno value reported by the forked child.
    pub fn errno(step: impl Into<String>, errno: i32) -> Self {
        Self::os(step, io::Error::from_raw_os_error(errno))
    }

    pub fn invalid(step: impl Into<String>, why: impl Into<String>) -> Self {
        Error {
            step: step.into(),
            kind: Kind::Invalid(why.into()),
        }
    }
}

/// strerror text without std's " (os error N)" suffix.
pub fn strerror(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Os(e) => f.write_str(&strerror(e)),
            Kind::Invalid(why) => f.write_str(why),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.kind)
    }
}

impl std::error::Error for Error {}

/// Attach a step name to an `io::Result`.
pub trait Context<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Context<T> for io::Result<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::os(step(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_syscall_and_strerror() {
        let e = Error::errno("prctl(PR_SET_NO_NEW_PRIVS, 1)", 1);
        assert_eq!(
            e.to_string(),
            "prctl(PR_SET_NO_NEW_PRIVS, 1): Operation not permitted"
        );
    }
}
