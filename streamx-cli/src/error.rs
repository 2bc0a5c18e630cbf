//! What can go wrong in a command, and the exit code each failure gets (see
//! [`EXIT_CODES_HELP`](crate::cli::EXIT_CODES_HELP)).

use std::process::ExitCode;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From streamx: a Redis command, a publish, a bad URL.
    #[error(transparent)]
    Streamx(streamx_runtime::Error),
    /// Redis cannot be reached: the runtime's connect error, told as a sentence.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, its password redacted.
        url: String,
        /// What went wrong, as a sentence (`Connection refused`).
        reason: String,
    },
    /// The connection to Redis broke during a command.
    #[error("Redis {command} on `{key}` failed: the connection to Redis failed: {reason}")]
    Disconnected {
        /// The command.
        command: &'static str,
        /// The key it addressed.
        key: String,
        /// What went wrong, as a sentence.
        reason: String,
    },
    /// Redis did not answer a refresh of `top` or the dashboard in time (a dead server, a
    /// connection being re-made).
    #[error("Redis did not answer within {secs}s")]
    NoAnswer {
        /// The time allowed, in seconds.
        secs: u64,
    },
    /// The stream does not exist.
    #[error("unknown stream `{stream}`: no such key")]
    UnknownStream {
        /// The stream asked for.
        stream: String,
    },
    /// The stream has no such group.
    #[error("unknown group `{group}` on stream `{stream}` (its groups: {known})")]
    UnknownGroup {
        /// The stream.
        stream: String,
        /// The group asked for.
        group: String,
        /// The groups it has, comma-separated, or `none`.
        known: String,
    },
    /// No dead letter has this id.
    #[error("no dead letter {id} in `{dlq_stream}`")]
    UnknownDeadLetter {
        /// The dead-letter stream.
        dlq_stream: String,
        /// The id asked for.
        id: String,
    },
    /// Input that cannot be used: a payload that is not JSON, a bad line of a file.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was given, e.g. `payload` or `line 3 of jobs.jsonl`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Several letters to change, no `--yes`, and nobody to ask.
    #[error(
        "refusing to {action} {count} dead letters without confirmation: standard input is not a terminal; \
         pass --yes to confirm"
    )]
    ConfirmationRequired {
        /// `replay` or `purge`.
        action: &'static str,
        /// How many letters.
        count: u64,
    },
    /// Something else the command acts on does not exist: a scheduled retry, a consumer.
    #[error("{what}")]
    NotFound {
        /// What is missing, e.g. ``no retry 5-0 scheduled in `{orders}:retries:billing` ``.
        what: String,
    },
    /// A change that needs `--yes` (or `--force`) and did not get it.
    #[error("refusing to {what} without confirmation: {reason}; pass {flag} to confirm")]
    Refused {
        /// What was to be done, e.g. ``delete group `billing` of `orders` ``.
        what: String,
        /// Why it was not done.
        reason: String,
        /// The flag that confirms it.
        flag: &'static str,
    },
    /// The operator answered no.
    #[error("{action} cancelled: not confirmed")]
    NotConfirmed {
        /// `replay` or `purge`.
        action: &'static str,
    },
    /// The terminal could not be driven (`top`) or the dashboard could not be served.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The exit codes (see [`EXIT_CODES_HELP`](crate::cli::EXIT_CODES_HELP)).
pub mod exit {
    /// A Redis command failed, or anything else without a code of its own.
    pub const FAILURE: u8 = 1;
    /// Invalid arguments or input (clap uses 2 for usage errors too).
    pub const USAGE: u8 = 2;
    /// Redis cannot be reached, or refused the credentials or the TLS setup.
    pub const CONNECT: u8 = 3;
    /// Unknown stream, group or dead letter.
    pub const NOT_FOUND: u8 = 4;
    /// NOPERM.
    pub const PERMISSION: u8 = 5;
    /// Confirmation needed and not given.
    pub const NOT_CONFIRMED: u8 = 6;
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    pub(crate) fn code(&self) -> u8 {
        use streamx_runtime::Error as E;
        match self {
            CliError::Streamx(e) if is_no_permission(e) => exit::PERMISSION,
            CliError::Streamx(E::Connect { .. } | E::Tls { .. }) => exit::CONNECT,
            CliError::Connect { .. } | CliError::Disconnected { .. } | CliError::NoAnswer { .. } => exit::CONNECT,
            CliError::Streamx(E::InvalidUrl { .. } | E::TlsNotEnabled { .. } | E::Encode { .. }) => exit::USAGE,
            CliError::Streamx(E::UnknownTopic { .. }) => exit::NOT_FOUND,
            CliError::Streamx(E::TopicShardsMismatch { .. } | E::InvalidTopic { .. }) => exit::USAGE,
            CliError::Streamx(E::TopicNotDrained { .. }) => exit::NOT_CONFIRMED,
            CliError::Streamx(_) | CliError::Io { .. } => exit::FAILURE,
            CliError::UnknownStream { .. }
            | CliError::UnknownGroup { .. }
            | CliError::UnknownDeadLetter { .. }
            | CliError::NotFound { .. } => exit::NOT_FOUND,
            CliError::InvalidInput { .. } | CliError::Read { .. } => exit::USAGE,
            CliError::ConfirmationRequired { .. } | CliError::NotConfirmed { .. } | CliError::Refused { .. } => {
                exit::NOT_CONFIRMED
            }
        }
    }
}

impl From<streamx_runtime::Error> for CliError {
    /// Keeps the runtime's error, except that a failure to reach Redis is told as a
    /// sentence rather than the I/O error's debug text (`Os { code: 111, .. }`).
    fn from(e: streamx_runtime::Error) -> Self {
        use streamx_runtime::Error as E;
        match e {
            E::Connect { url, source } => CliError::Connect { url, reason: sentence(&source) },
            // An outage: the connection broke (IO), or no answer came in time (Timeout).
            E::Redis { command, key, source }
                if matches!(source.kind(), fred::error::ErrorKind::IO | fred::error::ErrorKind::Timeout) =>
            {
                CliError::Disconnected { command, key, reason: sentence(&source) }
            }
            other => CliError::Streamx(other),
        }
    }
}

/// A client error as a sentence: the message inside an I/O error's debug text
/// (`Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }` gives
/// `Connection refused`), else the error's details.
fn sentence(e: &fred::error::Error) -> String {
    let details = e.details();
    let quoted = |field: &str| {
        let start = details.find(field)? + field.len();
        let end = details[start..].find('"')? + start;
        Some(details[start..end].to_string())
    };
    match quoted("message: \"").or_else(|| quoted("error: \"")) {
        Some(message) => message,
        None if details.is_empty() => e.to_string(),
        None => details.to_string(),
    }
}

/// True when Redis answered NOPERM (an ACL user without the command or the key).
fn is_no_permission(e: &streamx_runtime::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("NOPERM") {
            return true;
        }
        source = err.source();
    }
    false
}

/// A Redis command of the CLI's own failed: the same error as the engine's, naming the
/// command and the key.
pub fn redis(command: &'static str, key: impl Into<String>, source: fred::error::Error) -> CliError {
    CliError::from(streamx_runtime::Error::Redis { command, key: key.into(), source })
}

/// A `Result` whose error is [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noperm_is_a_permission_error_and_names_command_and_key() {
        let e = redis(
            "XINFO STREAM",
            "payments",
            fred::error::Error::new(fred::error::ErrorKind::Unknown, "NOPERM this user has no permissions"),
        );
        assert_eq!(e.code(), exit::PERMISSION);
        assert!(e.to_string().contains("XINFO STREAM on `payments`"), "{e}");
        let other = redis("XLEN", "k", fred::error::Error::new(fred::error::ErrorKind::Unknown, "WRONGTYPE Operation"));
        assert_eq!(other.code(), exit::FAILURE);
    }

    #[test]
    fn io_errors_are_sentences() {
        let io = fred::error::Error::new(
            fred::error::ErrorKind::IO,
            r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#,
        );
        let e = CliError::from(streamx_runtime::Error::Connect { url: "redis://h:1".to_string(), source: io.clone() });
        assert_eq!(e.to_string(), "cannot connect to Redis at redis://h:1: Connection refused");
        assert_eq!(e.code(), exit::CONNECT);
        let lost = redis("XREAD", "s", io);
        assert_eq!(lost.code(), exit::CONNECT);
        assert!(!lost.to_string().contains("Os {"), "{lost}");
        let timeout = fred::error::Error::new(fred::error::ErrorKind::Timeout, "Request timed out.");
        assert_eq!(redis("XINFO STREAM", "s", timeout).code(), exit::CONNECT, "no answer during an outage");
    }
}
