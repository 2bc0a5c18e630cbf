//! The check itself: asking Redis whether the user may run each command and touch each key,
//! without changing any data (see the module docs of [`super`] for why it is done this way).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::denial::{denial, Denial, Refused};
use crate::keys::slot;

/// Declares one key and does nothing: Redis checks the declared keys (for reading and
/// writing, as for the engine's scripts) before it runs a script.
static KEY_PROBE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua("#!lua flags=no-writes\n-- streamx: may the user touch KEYS[1]? (runs nothing)\nreturn 1\n")
});

/// Calls each command of ARGV (from the third on: `XINFO CONSUMERS`) in a read-only script:
/// Redis checks the user's permissions before it refuses a write in such a script, so a
/// permitted write is answered "Write commands are not allowed from read-only scripts" and
/// never runs, a refused command is answered with the ACL error, and a read runs on the
/// stream (ARGV[1], already checked) with arguments that are no valid id or number. Each call
/// gets 0, 1, 2, ... arguments until Redis stops answering with its arity error (checked
/// before permissions). Returns `{command, error or ''}` per command.
static COMMAND_PROBE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"#!lua flags=no-writes
-- streamx: may the user run each command of ARGV[3..]? (writes are refused: no-writes)
local key, filler = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local words = {}
  for w in string.gmatch(ARGV[i], '%S+') do table.insert(words, w) end
  local err = ''
  for extra = 0, 8 do
    local args = {}
    for j = 1, #words do args[j] = words[j] end
    for j = 1, extra do args[#words + j] = (j == 1) and key or filler end
    local r = redis.pcall(unpack(args))
    err = ''
    if type(r) == 'table' and r.err then err = r.err end
    if not string.find(err, 'Wrong number of args', 1, true) then break end
  end
  table.insert(out, {ARGV[i], err})
end
return out
"#,
    )
});

/// An argument of the probe's calls that no command takes for an id, a number or a group.
const FILLER: &str = "streamx-acl-probe";

/// Commands Redis does not run from scripts, sent directly with arguments that change
/// nothing: `CLIENT UNBLOCK` of a client id that does not exist.
const DIRECT_PROBES: &[(&str, &[&str])] =
    &[("CLIENT ID", &[]), ("CLIENT UNBLOCK", &["9223372036854775807"]), ("CLUSTER INFO", &[]), ("CLUSTER SLOTS", &[])];

/// What the check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Commands the user may not run.
    pub commands: BTreeSet<String>,
    /// Keys the user may not touch, in the order asked.
    pub keys: Vec<String>,
    /// Commands the server does not know (an older server).
    pub unknown: BTreeSet<String>,
    /// What could not be checked, and why.
    pub unchecked: Vec<String>,
}

impl Report {
    /// Something was refused.
    pub fn refused(&self) -> bool {
        !self.commands.is_empty() || !self.keys.is_empty()
    }

    /// Adds `other`'s findings.
    pub fn merge(&mut self, other: Report) {
        self.commands.extend(other.commands);
        for key in other.keys {
            if !self.keys.contains(&key) {
                self.keys.push(key);
            }
        }
        self.unknown.extend(other.unknown);
        self.unchecked.extend(other.unchecked);
    }

    fn refuse(&mut self, d: &Denial, command: &str) {
        match &d.refused {
            Refused::Command(_) => {
                self.commands.insert(command.to_string());
            }
            Refused::Key => {}
        }
    }
}

/// Asks Redis (on `stream`'s node) whether the user of `client` may touch each of `keys` and
/// run each of `commands` (as [`super::needs::required_commands`] names them). Changes no
/// data: loads two scripts into Redis's script cache and runs them read-only.
pub(crate) async fn check(client: &Client, stream: &str, keys: &[String], commands: &[String]) -> Report {
    let mut report = Report::default();
    let at = slot(stream);

    // SCRIPT LOAD (the check's own scripts): refused, the scripts may still be cached.
    for script in [&*KEY_PROBE, &*COMMAND_PROBE] {
        if let Err(e) = load(client, at, script).await {
            match denial(e.details()) {
                Some(d) => report.refuse(&d, "SCRIPT LOAD"),
                None => {
                    report
                        .unchecked
                        .push(format!("the check's scripts cannot be loaded (Redis 7.0 or newer is needed): {e}"));
                    return report;
                }
            }
        }
    }

    // Keys, one EVALSHA each (a refused key is not named), all sent at once.
    let answers = futures_util::future::join_all(
        keys.iter().map(|key| evalsha(client, slot(key), &KEY_PROBE, std::slice::from_ref(key), &[])),
    )
    .await;
    let mut can_evalsha = true;
    for (key, answer) in keys.iter().zip(answers) {
        let Err(e) = answer else { continue };
        match denial(e.details()) {
            Some(Denial { refused: Refused::Key, .. }) => report.keys.push(key.clone()),
            Some(d) => {
                report.refuse(&d, "EVALSHA");
                can_evalsha = false;
            }
            None if e.details().starts_with("NOSCRIPT") => can_evalsha = false,
            None => report.unchecked.push(format!("key `{key}`: {e}")),
        }
    }
    if !can_evalsha {
        report.unchecked.push("the keys and the commands, until the scripts that check them can run".to_string());
    }

    // Commands, in one read-only script; those Redis refuses to run from scripts directly.
    let mut direct = Vec::new();
    let scripted: Vec<&String> = commands.iter().filter(|c| !matches!(c.as_str(), "EVALSHA" | "SCRIPT LOAD")).collect();
    if can_evalsha && !scripted.is_empty() {
        let mut args = vec![stream.to_string(), FILLER.to_string()];
        args.extend(scripted.iter().map(|c| c.to_string()));
        match evalsha(client, at, &COMMAND_PROBE, &[], &args).await {
            Ok(reply) => {
                for row in reply.into_array() {
                    let mut row = row.into_array().into_iter();
                    let (Some(command), Some(err)) = (row.next().and_then(|v| v.into_string()), row.next()) else {
                        continue;
                    };
                    let err = err.into_string().unwrap_or_default();
                    if let Some(d) = denial(&err) {
                        report.refuse(&d, &command);
                    } else if err.contains("not allowed from script") {
                        direct.push(command);
                    } else if err.contains("Unknown Redis command") || err.contains("unknown command") {
                        report.unknown.insert(command);
                    }
                }
            }
            Err(e) => match denial(e.details()) {
                Some(d) => report.refuse(&d, "EVALSHA"),
                None => report.unchecked.push(format!("the commands: {e}")),
            },
        }
    } else if !scripted.is_empty() {
        direct.extend(
            scripted.iter().filter(|c| DIRECT_PROBES.iter().any(|(d, _)| *d == c.as_str())).map(|c| c.to_string()),
        );
    }
    for command in direct {
        let Some((_, extra)) = DIRECT_PROBES.iter().find(|(c, _)| *c == command) else {
            report.unchecked.push(format!("{command}: Redis does not run it from a script"));
            continue;
        };
        let mut words = command.split(' ');
        let name = words.next().unwrap_or_default().to_string();
        let args: Vec<Value> = words.chain(extra.iter().copied()).map(Value::from).collect();
        let result: Result<Value, FredError> =
            client.custom(CustomCommand::new(name, ClusterHash::Custom(at), false), args).await;
        if let Some(d) = result.err().and_then(|e| denial(e.details())) {
            report.refuse(&d, &command);
        }
    }
    report
}

/// `SCRIPT LOAD` of `script` on the node of `at`.
async fn load(client: &Client, at: u16, script: &Script) -> Result<(), FredError> {
    let lua = script.lua().map(|l| l.to_string()).unwrap_or_default();
    let command = CustomCommand::new_static("SCRIPT", ClusterHash::Custom(at), false);
    let _: Value = client.custom(command, vec![Value::from("LOAD"), Value::from(lua)]).await?;
    Ok(())
}

/// `EVALSHA` of `script` on the node of `at` (loading it when Redis does not have it; the
/// `NOSCRIPT` error when that fails).
async fn evalsha(
    client: &Client,
    at: u16,
    script: &Script,
    keys: &[String],
    args: &[String],
) -> Result<Value, FredError> {
    let mut all = vec![Value::from(script.sha1().to_string()), Value::from(keys.len() as i64)];
    all.extend(keys.iter().chain(args).map(|a| Value::from(a.as_str())));
    let command = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(at), false);
    match client.custom(command.clone(), all.clone()).await {
        // (when the load is refused, the NOSCRIPT says more about this call than its error)
        Err(e) if e.details().starts_with("NOSCRIPT") => match load(client, at, script).await {
            Ok(()) => client.custom(command, all).await,
            Err(_) => Err(e),
        },
        result => result,
    }
}
