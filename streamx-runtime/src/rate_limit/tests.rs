use std::time::Duration;

use super::{ParseRateLimitError, RateLimit};

fn parse(text: &str) -> Result<RateLimit, ParseRateLimitError> {
    text.parse()
}

#[test]
fn parses_counts_per_unit() {
    assert_eq!(parse("500/s"), Ok(RateLimit::per_second(500)));
    assert_eq!(parse("500/sec"), Ok(RateLimit::per_second(500)));
    assert_eq!(parse("30/min"), Ok(RateLimit::per_minute(30)));
    assert_eq!(parse("30/m"), Ok(RateLimit::per_minute(30)));
    assert_eq!(parse("1000/h"), Ok(RateLimit::per_hour(1000)));
    assert_eq!(parse("1000/hour"), Ok(RateLimit::per_hour(1000)));
    assert_eq!(parse(" 10 / 500ms "), Ok(RateLimit::new(10, Duration::from_millis(500))));
    assert_eq!(parse("7/2s"), Ok(RateLimit::new(7, Duration::from_secs(2))));
    assert_eq!(parse("1/24h"), Ok(RateLimit::new(1, Duration::from_secs(86_400))));
}

#[test]
fn refuses_bad_text_with_its_reason() {
    assert_eq!(parse("500"), Err(ParseRateLimitError::Shape));
    assert_eq!(parse("many/s"), Err(ParseRateLimitError::Count("many".into())));
    assert_eq!(parse("-1/s"), Err(ParseRateLimitError::Count("-1".into())));
    assert_eq!(parse("0/s"), Err(ParseRateLimitError::Zero));
    assert_eq!(parse("5/fortnight"), Err(ParseRateLimitError::Period("fortnight".into())));
    assert_eq!(parse("5/0s"), Err(ParseRateLimitError::Period("0s".into())));
    assert_eq!(parse("5/25h"), Err(ParseRateLimitError::Period("25h".into())));
    assert_eq!(
        parse("500").unwrap_err().to_string(),
        "expected `<count>/<period>`, e.g. \"500/s\", \"30/min\", \"1000/h\" or \"10/500ms\""
    );
    assert!(parse("0/s").unwrap_err().to_string().contains("at least 1"));
}

#[test]
fn displays_as_it_parses() {
    for text in ["500/s", "30/min", "1000/h", "10/500ms"] {
        assert_eq!(parse(text).unwrap().to_string(), text);
    }
}

#[test]
fn window_has_a_small_margin_and_pacing_splits_the_limit() {
    assert_eq!(RateLimit::per_second(100).window(), Duration::from_millis(1050));
    assert_eq!(RateLimit::per_minute(100).window(), Duration::from_millis(60_050));
    assert_eq!(RateLimit::new(1, Duration::from_millis(100)).window(), Duration::from_millis(105));
    assert_eq!(RateLimit::per_second(100).pacing(), (10, 10));
    assert_eq!(RateLimit::per_second(15).pacing(), (10, 2));
    assert_eq!(RateLimit::per_second(3).pacing(), (3, 1));
}
