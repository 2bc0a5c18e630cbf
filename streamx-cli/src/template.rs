//! `tail --format`: a line template with placeholders, parsed once (an unknown placeholder
//! is a usage error) and filled for every entry.

use std::fmt::Write as _;

use streamx_runtime::wire::RawEntry;

use crate::output::printable;
use crate::overview::id_time;

/// A parsed line template, e.g. `{id} {h:trace-id} {payload}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text printed as written.
    Text(String),
    /// The entry id.
    Id,
    /// The id's time, RFC 3339 with milliseconds.
    Time,
    /// The stream key.
    Stream,
    /// The `data` field as text (empty when there is none).
    Payload,
    /// Every header as `name=value`, space-separated.
    Headers,
    /// The value of one header (empty when absent).
    Header(String),
}

/// The placeholders, for error messages.
const PLACEHOLDERS: &str = "{id}, {time}, {stream}, {payload}, {headers}, {h:NAME}";

impl Template {
    /// Parses a template: placeholders in braces, `{{` and `}}` for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err("a lone `}`: write `}}` for a brace".to_string()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("`{{{name}` is not closed: write `}}`")),
                        }
                    }
                    let part = match name.as_str() {
                        "id" => Part::Id,
                        "time" => Part::Time,
                        "stream" => Part::Stream,
                        "payload" => Part::Payload,
                        "headers" => Part::Headers,
                        other => match other.strip_prefix("h:") {
                            Some(header) if !header.is_empty() => Part::Header(header.to_string()),
                            _ => return Err(format!("unknown placeholder `{{{other}}}`: use {PLACEHOLDERS}")),
                        },
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The line for `entry` of `stream`, every value from Redis through
    /// [`printable`] (the template's own text is the operator's, kept as written).
    pub fn render(&self, stream: &str, entry: &RawEntry) -> String {
        let mut line = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => line.push_str(text),
                Part::Id => {
                    let _ = write!(line, "{}", entry.id);
                }
                Part::Time => line.push_str(&id_time(entry.id)),
                Part::Stream => line.push_str(&printable(stream)),
                Part::Payload => {
                    let text = entry.data.as_ref().map(|d| String::from_utf8_lossy(d)).unwrap_or_default();
                    line.push_str(&printable(&text));
                }
                Part::Headers => {
                    let headers: Vec<String> = entry.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    line.push_str(&printable(&headers.join(" ")));
                }
                Part::Header(name) => line.push_str(&printable(entry.headers.get(name).unwrap_or_default())),
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamx_runtime::{Headers, MessageId};

    #[test]
    fn templates_parse_and_render() {
        let entry = RawEntry {
            id: MessageId::new(1_000, 2),
            data: Some(bytes::Bytes::from_static(b"{\"a\":1}\n")),
            headers: [("trace".to_string(), "t1".to_string())].into_iter().collect::<Headers>(),
            deleted: false,
            replay_group: None,
        };
        let t = Template::parse("{{{id}}} {time} {stream} {h:trace}|{h:none}| {headers} {payload}").unwrap();
        assert_eq!(t.render("s\u{1b}", &entry), "{1000-2} 1970-01-01T00:00:01.000Z s\\e t1|| trace=t1 {\"a\":1}\\n");
        assert!(Template::parse("{nope}").unwrap_err().contains("unknown placeholder `{nope}`"));
        assert!(Template::parse("{h:}").is_err());
        assert!(Template::parse("{id").unwrap_err().contains("not closed"));
        assert!(Template::parse("a } b").is_err());
        assert_eq!(Template::parse("plain").unwrap().render("s", &entry), "plain");
    }
}
