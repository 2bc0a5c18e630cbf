//! `streamx pause` and `streamx resume`, on the runtime's `Inspector::pause_as` / `resume`.

use serde::Serialize;

use crate::connection::Connection;
use crate::error::Result;
use crate::output::{print_json, printable};

/// What `pause` and `resume` print with `--json`.
#[derive(Serialize)]
struct Outcome<'a> {
    stream: &'a str,
    group: &'a str,
    /// The group's state now.
    paused: bool,
    /// Whether it was paused before the command.
    was_paused: bool,
    /// Whether the group exists (a pause may come before the group's first consumer).
    group_exists: bool,
}

/// `streamx pause STREAM GROUP [--by WHO]`.
pub async fn pause(conn: &Connection, stream: &str, group: &str, by: Option<&str>, json: bool) -> Result<()> {
    let inspector = conn.inspector();
    let was_paused = inspector.is_paused(stream, group).await?;
    match by {
        Some(by) => inspector.pause_as(stream, group, by).await?,
        None => inspector.pause(stream, group).await?,
    }
    let group_exists = inspector.group(stream, group).await?.is_some();
    if json {
        print_json(&Outcome { stream, group, paused: true, was_paused, group_exists });
        return Ok(());
    }
    let (s, g) = (printable(stream), printable(group));
    let again = if was_paused { " (it was paused already)" } else { "" };
    println!(
        "paused group `{g}` of `{s}`{again}: its consumers start no handler within a second, until `streamx resume`"
    );
    if !group_exists {
        println!("the group does not exist yet: consumers started on it will start nothing");
    }
    Ok(())
}

/// `streamx resume STREAM GROUP`.
pub async fn resume(conn: &Connection, stream: &str, group: &str, json: bool) -> Result<()> {
    let inspector = conn.inspector();
    let was_paused = inspector.resume(stream, group).await?;
    let group_exists = inspector.group(stream, group).await?.is_some();
    if json {
        print_json(&Outcome { stream, group, paused: false, was_paused, group_exists });
        return Ok(());
    }
    let (s, g) = (printable(stream), printable(group));
    if was_paused {
        println!("resumed group `{g}` of `{s}`: its consumers start handlers again within a second");
    } else {
        println!("group `{g}` of `{s}` was not paused");
    }
    Ok(())
}
