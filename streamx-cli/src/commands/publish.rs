//! `streamx publish`: one payload or a JSON Lines file, through the runtime's producer so the
//! entries are exactly what consumers expect.

use serde::Serialize;
use serde_json::value::RawValue;
use streamx_runtime::{Headers, MessageId, PublishOptions};

use crate::cli::PublishArgs;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{print_json, printable};

/// `streamx publish STREAM JSON` or `streamx publish STREAM --file FILE`.
pub async fn publish(conn: &Connection, args: &PublishArgs, json: bool) -> Result<()> {
    let headers: Headers = args.headers.iter().cloned().collect();
    let mut options = PublishOptions::new().headers(headers);
    if let Some(key) = &args.key {
        options = options.key(key.as_str());
    }
    let payloads = match (&args.payload, &args.file) {
        (Some(payload), _) => vec![parse(payload, || "payload".to_string())?],
        (None, Some(path)) => read_lines(path).await?,
        (None, None) => Vec::new(),
    };
    let ids: Vec<MessageId> = match payloads.as_slice() {
        [one] => vec![conn.producer().publish_with(&args.stream, one, &options).await?],
        many => conn.producer().publish_batch_with(&args.stream, many, &options).await?,
    };
    if json {
        #[derive(Serialize)]
        struct Published<'a> {
            stream: &'a str,
            published: usize,
            ids: &'a [MessageId],
        }
        print_json(&Published { stream: &args.stream, published: ids.len(), ids: &ids });
    } else if let [id] = ids.as_slice() {
        println!("{id}");
    } else {
        let range = match (ids.first(), ids.last()) {
            (Some(first), Some(last)) => format!(" ({first} .. {last})"),
            _ => String::new(),
        };
        println!("published {} messages to `{}`{range}", ids.len(), printable(&args.stream));
    }
    Ok(())
}

/// Checks that `text` is JSON and keeps it exactly as written.
fn parse(text: &str, what: impl FnOnce() -> String) -> Result<Box<RawValue>> {
    RawValue::from_string(text.trim().to_string())
        .map_err(|e| CliError::InvalidInput { what: what(), reason: format!("not JSON: {e}") })
}

/// Every non-empty line of a JSON Lines file, each checked before anything is published.
async fn read_lines(path: &std::path::Path) -> Result<Vec<Box<RawValue>>> {
    let shown = path.display().to_string();
    let text =
        tokio::fs::read_to_string(path).await.map_err(|source| CliError::Read { path: shown.clone(), source })?;
    let payloads = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse(line, || format!("line {} of {shown}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    if payloads.is_empty() {
        return Err(CliError::InvalidInput { what: shown, reason: "no payload in the file".to_string() });
    }
    Ok(payloads)
}
