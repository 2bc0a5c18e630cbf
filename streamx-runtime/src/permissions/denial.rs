//! Telling a permission error from other errors, and what it refused.
//!
//! Redis words them differently by version and by where the command ran (fred reports all
//! with `ErrorKind::Unknown` and the server's text in `details()`):
//!
//! | where | Redis 7.0 | newer |
//! |---|---|---|
//! | a command | `NOPERM this user has no permissions to run the 'xack' command` | `NOPERM User u has no permissions to run the 'xack' command` |
//! | a key | `NOPERM this user has no permissions to access one of the keys used as arguments` | `NOPERM No permissions to access a key` |
//! | in a script | `ERR The user executing the script can't run this command or subcommand script: <sha>, on @user_script:1.` (or `can't access at least one of the keys ...`) | `ACL failure in script: User u has no permissions to run the 'xclaim' command script: <sha>, ...` (or `No permissions to access a key`) |

use super::needs::from_acl_name;

/// What a permission error refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A command: named when Redis says which (`XACK`), `None` inside a script on 7.0.
    Command(Option<String>),
    /// A key of the command (Redis never says which).
    Key,
}

/// A permission error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub refused: Refused,
    /// The sha1 of the script it happened in, when it did.
    pub script: Option<String>,
}

/// The permission error in a server error's text, if it is one.
pub(crate) fn denial(details: &str) -> Option<Denial> {
    let refused = if details.contains("NOPERM") || details.contains("ACL failure in script") {
        if let Some(name) = quoted_after(details, "run the '") {
            Refused::Command(Some(from_acl_name(name)))
        } else if details.contains("key") {
            Refused::Key
        } else {
            Refused::Command(None)
        }
    } else if details.contains("The user executing the script can't run this command") {
        Refused::Command(None)
    } else if details.contains("The user executing the script can't access") {
        Refused::Key
    } else {
        return None;
    };
    Some(Denial { refused, script: script_sha(details) })
}

/// The text between `marker` and the next `'`.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest.split('\'').next().filter(|name| !name.is_empty())
}

/// The 40 hex digits after `script: `.
fn script_sha(text: &str) -> Option<String> {
    text.split("script: ").skip(1).find_map(|rest| {
        let sha: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (sha.len() == 40).then(|| sha.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "27b8b2b6ea1f6a0870efdf76476c363801f62a8a";

    #[test]
    fn permission_errors_of_every_wording_are_told() {
        let cmd = |name: &str| Refused::Command(Some(name.to_string()));
        let cases = [
            ("NOPERM this user has no permissions to run the 'xack' command", cmd("XACK"), None),
            ("NOPERM User u has no permissions to run the 'client|unblock' command", cmd("CLIENT UNBLOCK"), None),
            ("NOPERM this user has no permissions to access one of the keys used as arguments", Refused::Key, None),
            ("NOPERM No permissions to access a key", Refused::Key, None),
            (
                &*format!("ERR The user executing the script can't run this command or subcommand script: {SHA}, on @user_script:1."),
                Refused::Command(None),
                Some(SHA),
            ),
            (
                &*format!("The user executing the script can't access at least one of the keys mentioned in the command arguments script: {SHA}, on @user_script:9."),
                Refused::Key,
                Some(SHA),
            ),
            (
                &*format!("NOPERM User u has no permissions to run the 'xclaim' command script: {SHA}, on @user_script:3."),
                cmd("XCLAIM"),
                Some(SHA),
            ),
            (
                &*format!("ERR ACL failure in script: User u has no permissions to run the 'xclaim' command script: {SHA}, on @user_script:3."),
                cmd("XCLAIM"),
                Some(SHA),
            ),
            ("ACL failure in script: No permissions to access a key", Refused::Key, None),
        ];
        for (text, refused, script) in cases {
            let d = denial(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(d, Denial { refused, script: script.map(str::to_string) }, "{text}");
        }
        for other in ["NOGROUP No such key", "ERR Write commands are not allowed from read-only scripts.", "BUSYGROUP"]
        {
            assert_eq!(denial(other), None, "{other}");
        }
    }
}
