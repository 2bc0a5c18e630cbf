//! `streamx group create|delete|reset|remove-consumer`, on the runtime's [`GroupAdmin`] API.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use streamx_runtime::admin::{ConsumerRemoval, EntryCount, GroupAdmin, GroupStart, ResetPlan, ResetTarget};
use streamx_runtime::MessageId;

use crate::cli::{GroupCommand, GroupResetArgs};
use crate::confirm::confirm_one;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{millis, or_dash, print_json, printable};

/// Runs a `group` command.
pub async fn run(conn: &Connection, command: &GroupCommand, json: bool) -> Result<()> {
    let admin = GroupAdmin::with_client(conn.client());
    match command {
        GroupCommand::Create { stream, group, from, mkstream } => {
            create(conn, &admin, stream, group, *from, *mkstream, json).await
        }
        GroupCommand::Delete { stream, group, yes } => delete(conn, &admin, stream, group, *yes, json).await,
        GroupCommand::Reset(args) => reset(conn, &admin, args, json).await,
        GroupCommand::RemoveConsumer { stream, group, consumer, force, alive_within } => {
            remove_consumer(conn, &admin, stream, group, consumer, *force, *alive_within, json).await
        }
    }
}

/// `--from`: `0`, `$`, an RFC 3339 time or an id.
pub fn parse_start(text: &str) -> Result<GroupStart, String> {
    match text {
        "0" => Ok(GroupStart::Beginning),
        "$" => Ok(GroupStart::End),
        _ if text.contains('T') => parse_time_ms(text).map(GroupStart::Time),
        _ => text
            .parse::<MessageId>()
            .map(GroupStart::After)
            .map_err(|_| format!("`{text}` is not 0, $, an id (1712000000000-0) or an RFC 3339 time")),
    }
}

/// An RFC 3339 time (`2026-12-07T10:00:00Z`, UTC) as Unix milliseconds.
pub fn parse_time_ms(text: &str) -> Result<u64, String> {
    let time =
        humantime::parse_rfc3339_weak(text).map_err(|e| format!("`{text}`: {e} (expected 2026-12-07T10:00:00Z)"))?;
    let since = time.duration_since(UNIX_EPOCH).map_err(|_| format!("`{text}` is before 1970"))?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

async fn create(
    conn: &Connection,
    admin: &GroupAdmin,
    stream: &str,
    group: &str,
    from: GroupStart,
    mkstream: bool,
    json: bool,
) -> Result<()> {
    if !mkstream {
        conn.require_stream(stream).await?;
    }
    let created = admin.create(stream, group, from, mkstream).await?;
    if json {
        #[derive(Serialize)]
        struct Created<'a> {
            stream: &'a str,
            group: &'a str,
            created: bool,
        }
        print_json(&Created { stream, group, created });
    } else if created {
        println!("created group {} on {}", printable(group), printable(stream));
    } else {
        println!("group {} exists already on {}; nothing changed", printable(group), printable(stream));
    }
    Ok(())
}

async fn delete(conn: &Connection, admin: &GroupAdmin, stream: &str, group: &str, yes: bool, json: bool) -> Result<()> {
    let info = conn.require_group(stream, group).await?;
    confirm_one(
        &format!(
            "delete group `{group}` of `{stream}` ({} pending, scheduled retries included, are dropped)",
            info.pending
        ),
        yes,
    )
    .await?;
    let deleted = admin.delete(stream, group).await?;
    if json {
        #[derive(Serialize)]
        struct Deleted<'a> {
            stream: &'a str,
            group: &'a str,
            deleted: bool,
            keys_deleted: u64,
        }
        print_json(&Deleted { stream, group, deleted: deleted.existed, keys_deleted: deleted.keys_deleted });
    } else {
        println!(
            "deleted group {} of {} and {} of its bookkeeping keys",
            printable(group),
            printable(stream),
            deleted.keys_deleted
        );
    }
    Ok(())
}

fn target(args: &GroupResetArgs) -> Result<ResetTarget> {
    Ok(if let Some(id) = args.to_id {
        ResetTarget::Id(id)
    } else if let Some(ms) = args.to_datetime {
        ResetTarget::Time(ms)
    } else if args.to_earliest {
        ResetTarget::Earliest
    } else if args.to_latest {
        ResetTarget::Latest
    } else if let Some(d) = args.by_duration {
        ResetTarget::Back(d)
    } else {
        return Err(CliError::InvalidInput {
            what: "reset target".to_string(),
            reason: "give one of --to-id, --to-datetime, --to-earliest, --to-latest, --by-duration".to_string(),
        });
    })
}

/// An [`EntryCount`] as JSON: `{"count": n, "exact": bool}`.
#[derive(Serialize)]
struct CountView {
    count: u64,
    exact: bool,
}

impl From<EntryCount> for CountView {
    fn from(c: EntryCount) -> Self {
        match c {
            EntryCount::Exact(count) => CountView { count, exact: true },
            EntryCount::MoreThan(count) => CountView { count, exact: false },
        }
    }
}

async fn reset(conn: &Connection, admin: &GroupAdmin, args: &GroupResetArgs, json: bool) -> Result<()> {
    let (stream, group) = (args.stream.as_str(), args.group.as_str());
    conn.require_group(stream, group).await?;
    let to = target(args)?;
    let plan =
        if args.dry_run { admin.plan_reset(stream, group, to).await? } else { admin.reset(stream, group, to).await? };
    let plan: ResetPlan = plan.ok_or_else(|| CliError::UnknownGroup {
        stream: stream.to_string(),
        group: group.to_string(),
        known: "deleted meanwhile".to_string(),
    })?;
    if json {
        #[derive(Serialize)]
        struct Reset<'a> {
            stream: &'a str,
            group: &'a str,
            from: Option<MessageId>,
            to: MessageId,
            redelivered: CountView,
            skipped: CountView,
            entries_read: Option<u64>,
            applied: bool,
        }
        print_json(&Reset {
            stream,
            group,
            from: plan.from,
            to: plan.to,
            redelivered: plan.redelivered.into(),
            skipped: plan.skipped.into(),
            entries_read: plan.entries_read,
            applied: plan.applied,
        });
        return Ok(());
    }
    let verb = if plan.applied { "moved" } else { "would move (dry run, nothing changed)" };
    println!("{} on {}: {verb} from {} to {}", printable(group), printable(stream), or_dash(plan.from), plan.to);
    println!("  entries delivered again: {}", plan.redelivered);
    println!("  entries skipped: {}", plan.skipped);
    if plan.entries_read.is_none() {
        println!("  (too many entries to count: Redis estimates the group's lag until it catches up)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn remove_consumer(
    conn: &Connection,
    admin: &GroupAdmin,
    stream: &str,
    group: &str,
    consumer: &str,
    force: bool,
    alive_within: Duration,
    json: bool,
) -> Result<()> {
    conn.require_group(stream, group).await?;
    match admin.remove_consumer(stream, group, consumer, force, alive_within).await? {
        ConsumerRemoval::NotFound => {
            Err(CliError::NotFound { what: format!("group `{group}` of `{stream}` has no consumer `{consumer}`") })
        }
        ConsumerRemoval::Placeholder => Err(CliError::InvalidInput {
            what: format!("consumer `{consumer}`"),
            reason: "it is streamx's placeholder for scheduled retries or suspects, not a member; it is never removed"
                .to_string(),
        }),
        ConsumerRemoval::LooksAlive(l) => {
            let mut signs = vec![format!("active {} ago", millis(l.idle_ms))];
            if let Some(age) = l.heartbeat_age_ms {
                signs.push(format!("heartbeat {} ago", millis(age)));
            }
            if let Some(left) = l.deadline_in_ms.filter(|left| *left > 0) {
                signs.push(format!("promised to beat again within {}", millis(left.unsigned_abs())));
            }
            Err(CliError::Refused {
                what: format!("remove consumer `{consumer}` of group `{group}` ({} pending)", l.pending),
                reason: format!("it looks alive: {}", signs.join(", ")),
                flag: "--force",
            })
        }
        ConsumerRemoval::StillReading { handed_over, .. } => Err(CliError::Refused {
            what: format!("remove consumer `{consumer}` of group `{group}`"),
            reason: format!(
                "it kept reading while its entries were handed over, so it is alive ({handed_over} were handed to \
                 the retry schedule)"
            ),
            flag: "--force after stopping its process",
        }),
        ConsumerRemoval::Removed { handed_over, dead_lettered } => {
            if json {
                #[derive(Serialize)]
                struct Removed<'a> {
                    stream: &'a str,
                    group: &'a str,
                    consumer: &'a str,
                    handed_over: u64,
                    dead_lettered: u64,
                }
                print_json(&Removed { stream, group, consumer, handed_over, dead_lettered });
            } else {
                println!(
                    "removed consumer {} of {}: {handed_over} pending entries handed to the group's retry schedule, \
                     due now{}",
                    printable(consumer),
                    printable(group),
                    if dead_lettered > 0 {
                        format!("; {dead_lettered} deleted from the stream meanwhile were dead-lettered as trimmed")
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse() {
        assert_eq!(parse_start("0"), Ok(GroupStart::Beginning));
        assert_eq!(parse_start("$"), Ok(GroupStart::End));
        assert_eq!(parse_start("5-1"), Ok(GroupStart::After(MessageId::new(5, 1))));
        assert_eq!(parse_start("1970-01-01T00:00:01Z"), Ok(GroupStart::Time(1000)));
        assert!(parse_start("yesterday").is_err());
        assert_eq!(parse_time_ms("1970-01-01T00:00:02.5Z"), Ok(2500));
    }
}
